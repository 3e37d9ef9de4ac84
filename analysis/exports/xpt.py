"""SAS XPORT v5 export package: one lowercase ``<domain>.xpt`` per SDTM dataset + define.csv."""

from __future__ import annotations

from analysis.exports.csv import write_csv
from analysis.exports.data import ExportData
from analysis.exports.sdtm import build_sdtm_datasets
from analysis.exports.xport import define_rows, write_xpt

DEFINE_COLUMNS = ("dataset", "variable", "label", "type", "length", "origin")


def build_xpt_exports(data: ExportData) -> dict[str, bytes]:
    """Return {file name: bytes}: ``dm.xpt``, ``ds.xpt``, ``ae.xpt``, ``ex.xpt``, findings
    (``vs.xpt``, ``qs.xpt``, ``xf.xpt`` when mapped) and ``define.csv`` (variable metadata).

    Raises ExportError (XptError for format limits) before anything is produced when a
    dataset breaks XPT-01..07 or SDTM-01..05.
    """
    datasets = build_sdtm_datasets(data)
    files = {f"{d.name.lower()}.xpt": write_xpt(d, data.exported_at) for d in datasets}
    files["define.csv"] = write_csv(DEFINE_COLUMNS, define_rows(datasets))
    return files
