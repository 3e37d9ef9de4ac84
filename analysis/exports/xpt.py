"""SAS XPORT v5 export package: one lowercase ``<domain>.xpt`` per SDTM dataset + define.csv
(variable metadata with the CDISC codelist and CT version, and each collected value's source
``form.field``)."""

from __future__ import annotations

from analysis.exports.csv import write_csv
from analysis.exports.data import ExportData
from analysis.exports.sdtm import build_sdtm_datasets
from analysis.exports.xport import define_rows, write_xpt

DEFINE_COLUMNS = ("dataset", "variable", "label", "type", "length", "origin", "codelist",
                  "source")


def build_xpt_exports(data: ExportData) -> dict[str, bytes]:
    """Return {file name: bytes}: ``dm.xpt``, ``ds.xpt``, ``ae.xpt``, ``ex.xpt``, findings
    (``vs.xpt``, ``qs.xpt``, ``xf.xpt`` when mapped) and ``define.csv`` (variable metadata).

    Raises ExportError (XptError for format limits) before anything is produced when a
    dataset breaks XPT-01..07 or SDTM-01..05.
    """
    datasets = build_sdtm_datasets(data)
    files = {f"{d.name.lower()}.xpt": write_xpt(d, data.exported_at) for d in datasets}
    version = data.cdisc.ct_version if data.cdisc else ""
    rows = [
        (*row, f"{variable.codelist} (CDISC CT {version})" if variable.codelist else None,
         variable.source)
        for row, variable in zip(
            define_rows(datasets), (v for d in datasets for v in d.variables), strict=True
        )
    ]
    files["define.csv"] = write_csv(DEFINE_COLUMNS, rows)
    return files
