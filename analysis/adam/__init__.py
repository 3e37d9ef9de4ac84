"""ADaM datasets (ADaMIG v1.3 shapes) derived from the analysis data the SAP runner uses.

Pure: `TrialData` (and, when available, SDTM DM and AE) in, `XptDataset`s out - the same
dataset interface as SDTM, so the XPT, Dataset-JSON and Define-XML writers serve both.

* ADSL - one record per subject: populations, treatment (unblinded only), strata,
  intercurrent-event flags and dates (`analysis.adam.adsl`);
* one BDS dataset per continuous endpoint, ANL01FL marking the SAP's analysis rows and DTYPE
  the derived ones, and one per binary (responder) endpoint (`analysis.adam.bds`);
* ADTTE for time-to-event endpoints (`analysis.adam.adtte`);
* ADAE from SDTM AE (`analysis.adam.adae`).

A blinded build carries no variable that correlates with the arm (no ARM, TRTxxP/A, TRTP/A).
`source_dataset(protocol, endpoint_id)` names the dataset an endpoint's analysis reads, for the
report's footnotes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from analysis.adam.adae import ADAE_METHODS, build_adae
from analysis.adam.adsl import adsl_methods, build_adsl
from analysis.adam.adtte import ADTTE_METHODS, build_adtte
from analysis.adam.bds import (
    bds_methods,
    binary_methods,
    build_bds,
    build_binary_bds,
    dataset_names,
    is_binary,
    is_continuous,
    source_dataset,
)
from analysis.adam.common import AdamError, usubjid
from analysis.datasets import TrialData
from analysis.exports.xport import XptDataset


def build_adam(
    data: TrialData,
    *,
    blinded: bool,
    sdtm: Sequence[XptDataset] = (),
    studyid: str | None = None,
) -> list[XptDataset]:
    """Return ADSL, one BDS dataset per continuous endpoint, ADTTE (when the protocol has a
    time-to-event endpoint) and ADAE (when ``sdtm`` holds AE).

    ``sdtm`` supplies DM (demographics copied into ADSL) and AE; ``studyid`` defaults to the
    protocol code. A blinded build reads the protocol's texts (endpoint names, field labels,
    event descriptions) with every arm name redacted, as a blinded analysis run does. Raises
    AdamError when a required input is missing (never fills a default).
    """
    studyid = studyid or data.protocol.code
    if blinded:
        data = _redacted(data)
    by_name = {d.name: d for d in sdtm}
    adsl = build_adsl(data, studyid=studyid, blinded=blinded, dm=by_name.get("DM"))
    datasets = [adsl]
    names = dataset_names(data.protocol)
    for endpoint in data.protocol.endpoints:
        if is_continuous(endpoint):
            datasets.append(build_bds(data, endpoint, name=names[endpoint.id], studyid=studyid,
                                      blinded=blinded))
        elif is_binary(endpoint):
            datasets.append(build_binary_bds(data, endpoint, name=names[endpoint.id],
                                             studyid=studyid, blinded=blinded))
    adtte = build_adtte(data, studyid=studyid, blinded=blinded)
    if adtte is not None:
        datasets.append(adtte)
    if "AE" in by_name:
        datasets.append(build_adae(by_name["AE"], adsl, blinded=blinded))
    return datasets


def _redacted(data: TrialData) -> TrialData:
    from analysis.sap import redact_protocol  # the SAP runner imports this package

    return dataclasses.replace(data, protocol=redact_protocol(data.protocol))


def adam_methods(data: TrialData, *, blinded: bool = False) -> dict[str, str]:
    """Return Define method texts keyed ``DATASET.VARIABLE`` for every derived ADaM variable
    (arm names redacted from the protocol texts they quote when ``blinded``)."""
    if blinded:
        data = _redacted(data)
    methods = {f"ADSL.{k}": v for k, v in adsl_methods(data).items()}
    names = dataset_names(data.protocol)
    for endpoint in data.protocol.endpoints:
        if is_continuous(endpoint):
            methods.update({f"{names[endpoint.id]}.{k}": v
                            for k, v in bds_methods(endpoint).items()})
        elif is_binary(endpoint):
            methods.update({f"{names[endpoint.id]}.{k}": v
                            for k, v in binary_methods(endpoint).items()})
    methods.update({f"ADTTE.{k}": v for k, v in ADTTE_METHODS.items()})
    methods.update({f"ADAE.{k}": v for k, v in ADAE_METHODS.items()})
    return methods


__all__ = [
    "AdamError",
    "adam_methods",
    "build_adae",
    "build_adam",
    "build_adsl",
    "build_adtte",
    "build_bds",
    "dataset_names",
    "source_dataset",
    "usubjid",
]
