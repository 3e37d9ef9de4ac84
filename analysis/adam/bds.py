"""BDS datasets, one per continuous endpoint, from the SAP's own analysis dataset.

Every observed value of the endpoint's outcome field(s) becomes a record (AVAL, ADT, ADY,
AVISIT/AVISITN, BASE, CHG); the baseline record carries ABLFL=Y. The rows the SAP analyses
are those of `analysis.datasets.endpoint_frame`, where the estimand's intercurrent-event
strategies are applied; they are flagged ANL01FL=Y here:

* an observed value used as is: the observed record has ANL01FL=Y;
* a value set to missing (hypothetical) or truncated (while on treatment, longitudinal): the
  observed record stays, without ANL01FL, and ICEACT says why;
* a value replaced (last on-treatment value, or a composite value): a derived record with
  DTYPE (``LOCF``, or the sponsor term ``COMPOSITE``) carries the analysed value and
  ANL01FL=Y; the observed record stays unflagged.

So the analysis N, the analysed values and the per-visit means of the report can be recomputed
from the records with ANL01FL=Y (tests/analysis/test_adam.py checks it for every library
protocol). Treatment (TRTP/TRTPN) exists only in unblinded builds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from analysis.adam.adsl import treatment_start
from analysis.adam.common import (
    AdamError,
    arm_names,
    date_cell,
    number,
    short_code,
    study_day,
    usubjid,
    var,
    visit_order,
)
from analysis.datasets import (
    SubjectData,
    TrialData,
    endpoint_frame,
    in_population,
    pre_treatment_visits,
    subject_events,
    visible_visits,
)
from analysis.exports.xport import Cell, XptDataset, XptVariable
from analysis.intercurrent import governing_event
from protocols.model import BINARY_MODELS, SURVIVAL_MODELS, Endpoint, Protocol

CONTINUOUS_MODELS = frozenset({"ancova", "mmrm", "gee_per_eye"})
DERIVED_TYPES = {"last_on_treatment": "LOCF", "composite": "COMPOSITE"}


def dataset_names(protocol: Protocol) -> dict[str, str]:
    """Return endpoint id -> name of the ADaM dataset its analysis reads.

    Continuous and binary endpoints get their own BDS dataset (``AD`` + up to six letters/
    digits of the endpoint id, a clash ending in a counter); time-to-event endpoints share
    ``ADTTE``."""
    taken = {"ADSL", "ADTTE", "ADAE"}
    names: dict[str, str] = {}
    for endpoint in protocol.endpoints:
        model = endpoint.analysis.model
        if model in SURVIVAL_MODELS:
            names[endpoint.id] = "ADTTE"
        else:
            names[endpoint.id] = short_code(endpoint.id, taken, prefix="AD")
    return names


def _bds_keys(blinded: bool) -> list[XptVariable]:
    """The variables every BDS dataset here starts with, up to AVAL (treatment unblinded only)."""
    keys = [
        var("STUDYID", "Study Identifier", origin="Predecessor"),
        var("USUBJID", "Unique Subject Identifier", origin="Predecessor"),
        var("SITEID", "Study Site Identifier", origin="Predecessor"),
    ]
    if not blinded:
        keys += [var("TRTP", "Planned Treatment"), var("TRTPN", "Planned Treatment (N)", "num")]
    return [
        *keys,
        var("PARAMCD", "Parameter Code", origin="Assigned"),
        var("PARAM", "Parameter", origin="Assigned"),
        var("AVISIT", "Analysis Visit"),
        var("AVISITN", "Analysis Visit (N)", "num"),
        var("ADT", "Analysis Date", "num"),
        var("ADY", "Analysis Relative Day", "num"),
        var("AVAL", "Analysis Value", "num"),
    ]


_BDS_FLAGS = (  # derivation, analysis flag and the governing intercurrent event
    var("DTYPE", "Derivation Type"),
    var("ANL01FL", "Analysis Flag 01"),
    var("ICEID", "Governing Intercurrent Event"),
    var("ICESTRAT", "Intercurrent Event Strategy"),
    var("ICEACT", "Intercurrent Event Action"),
)


def source_dataset(protocol: Protocol, endpoint_id: str) -> str:
    """Return the name of the ADaM dataset the analysis of ``endpoint_id`` reads; raise
    KeyError for an endpoint the protocol does not have."""
    names = dataset_names(protocol)
    if endpoint_id not in names:
        raise KeyError(endpoint_id)
    return names[endpoint_id]


def parameter_codes(endpoint: Endpoint) -> dict[str, str]:
    """Return outcome field id -> PARAMCD (upper-case field id, at most 8 characters)."""
    taken: set[str] = set()
    return {field: short_code(field, taken) for field in endpoint.analysis.outcome_fields}


def _parameter(protocol: Protocol, field_id: str) -> str:
    field = protocol.field(field_id)
    return f"{field.label.en} ({field.unit})" if field.unit else field.label.en


def _analysis_fields(endpoint: Endpoint) -> tuple[str, ...]:
    spec = endpoint.analysis
    return spec.outcome_fields if spec.model == "gee_per_eye" else spec.outcome_fields[:1]


def _analysis_visits(endpoint: Endpoint) -> tuple[str, ...]:
    spec = endpoint.analysis
    return spec.visits if spec.model == "mmrm" else spec.visits[-1:]


def baseline_visit(
    data: TrialData, subject: SubjectData, endpoint: Endpoint, field_id: str
) -> str | None:
    """Return the visit whose value is the subject's baseline (as `analysis.datasets` picks
    it): the endpoint's ``baseline_visit``, else the first pre-treatment visit in schedule
    order with a value of the baseline field (none: no baseline, never a later visit)."""
    spec = endpoint.analysis
    if spec.baseline_visit:
        return spec.baseline_visit
    visits = visible_visits(data, subject)
    wanted = spec.baseline_field or field_id
    for visit in pre_treatment_visits(data.protocol):
        value = visits.get(visit, {}).get(wanted)
        if value not in (None, "", []) and not isinstance(value, dict):
            return visit
    return None


def analysis_records(data: TrialData, endpoint: Endpoint) -> list[dict[str, Any]]:
    """Return the SAP's analysis rows of an endpoint (`analysis.datasets.endpoint_frame`) as
    plain records; none while no participant is in the endpoint's analysis set (e.g. before
    the first randomization). Raises AdamError when the rows cannot be built."""
    population = endpoint.estimand.analysis_set
    if not any(in_population(data, s, population, endpoint) for s in data.subjects):
        return []
    try:
        frame = endpoint_frame(data, endpoint)
    except ValueError as exc:
        raise AdamError(f"{endpoint.id}: {exc}") from exc
    return [{str(k): v for k, v in raw.items()} for raw in frame.to_dict("records")]


def _frame_rows(
    data: TrialData, endpoint: Endpoint
) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    """Index the SAP's analysis rows by (subject, visit, outcome field)."""
    fields = _analysis_fields(endpoint)
    out: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    eyes = ("right", "left")
    for record in analysis_records(data, endpoint):
        field = fields[eyes.index(record["eye"])] if "eye" in record and isinstance(
            record.get("eye"), str) else fields[0]
        out[(str(record["subject"]), str(record["visit"]), field)] = record
    return out


def _cell(value: object) -> float | None:
    if value is None:
        return None
    number_ = float(value)  # type: ignore[arg-type]
    return None if number_ != number_ else number_


def build_bds(
    data: TrialData, endpoint: Endpoint, *, name: str, studyid: str, blinded: bool
) -> XptDataset:
    """Return the BDS dataset of one continuous endpoint (see the module docstring).

    Raises AdamError for an endpoint whose model is not continuous, or whose analysis
    dataset cannot be built (no subject in its population)."""
    spec = endpoint.analysis
    if spec.model not in CONTINUOUS_MODELS:
        raise AdamError(f"{endpoint.id}: {spec.model} is not a continuous endpoint")
    protocol = data.protocol
    arms = arm_names(protocol)
    order = visit_order(protocol)
    labels = {v.id: v.label.en for v in protocol.schedule.visits}
    post_treatment = {
        v.id for v in protocol.schedule.visits if v.anchor == "randomization" and v.day > 0
    }
    codes = parameter_codes(endpoint)
    fields = _analysis_fields(endpoint)
    analysis_visits = set(_analysis_visits(endpoint))
    outcome = "change" if spec.change_from_baseline else "value"
    analysed = _frame_rows(data, endpoint)
    variables: list[XptVariable] = [
        *_bds_keys(blinded),
        var("BASE", "Baseline Value", "num"),
        var("CHG", "Change from Baseline", "num"),
        var("ABLFL", "Baseline Record Flag"),
        *_BDS_FLAGS,
        var("SRCVIS", "Source Visit of Analysis Value", origin="Derived"),
    ]
    rows: list[tuple[Cell, ...]] = []
    for subject in data.subjects:
        if subject.arm is None:
            continue
        subject_id = usubjid(studyid, subject.subject)
        start = treatment_start(subject)
        visits = visible_visits(data, subject)
        events = subject_events(data, subject) if endpoint.estimand.intercurrent_events else {}
        lead: list[Cell] = [studyid, subject_id, subject.site]
        if not blinded:
            lead += [arms[subject.arm][0], arms[subject.arm][1]]
        schedule = [v.id for v in protocol.schedule.visits]
        for field in fields:
            base_visit = baseline_visit(data, subject, endpoint, field)
            base_field = spec.baseline_field or field
            base = number(visits.get(base_visit, {}).get(base_field)) if base_visit else None
            param = [codes[field], _parameter(protocol, field)]
            for visit in schedule + sorted(v for v in visits if v not in schedule):
                value = number(visits.get(visit, {}).get(field))
                on = subject.visit_dates.get(visit)
                is_base = visit == base_visit and base_field == field
                record = analysed.get((subject.subject, visit, field))
                ice: list[Cell] = [None, None, None]
                if visit in analysis_visits and value is not None:
                    governing = governing_event(endpoint, events, on)
                    if governing is not None and governing[0].strategy != "treatment_policy":
                        action = record.get("ice_action") if record else "truncated"
                        ice = [governing[0].event, governing[0].strategy, action]
                flagged = (
                    record is not None and record.get("ice_action") is None
                    and _cell(record.get(outcome)) is not None
                )
                if value is not None:
                    change = value - base if (
                        base is not None and visit in post_treatment and not is_base) else None
                    rows.append(tuple(lead + param + [
                        labels.get(visit, visit), order.get(visit), date_cell(on),
                        study_day(on, start), value, base, change, "Y" if is_base else None,
                        None, "Y" if flagged else None, *ice, visit,
                    ]))
                if record is not None and record.get("ice_action") in DERIVED_TYPES:
                    derived_value = _cell(record.get("value"))
                    derived_change = _cell(record.get("change"))
                    source = record.get("ice_from_visit")
                    source_on = subject.visit_dates.get(source) if isinstance(source, str) \
                        else None
                    if derived_value is None and derived_change is None:
                        continue
                    rows.append(tuple(lead + param + [
                        labels.get(visit, visit), order.get(visit), date_cell(source_on),
                        study_day(source_on, start), derived_value, _cell(record.get(
                            "baseline")), derived_change, None,
                        DERIVED_TYPES[str(record["ice_action"])],
                        "Y" if _cell(record.get(outcome)) is not None else None,
                        record.get("ice_event"), record.get("ice_strategy"),
                        record.get("ice_action"), source if isinstance(source, str) else None,
                    ]))
    label = f"Endpoint {endpoint.id}"
    return XptDataset(name, label if len(label) <= 40 else f"Endpoint dataset {name}",
                      tuple(variables), tuple(rows))


def build_binary_bds(
    data: TrialData, endpoint: Endpoint, *, name: str, studyid: str, blinded: bool
) -> XptDataset:
    """Return the BDS dataset of one binary (responder) endpoint: one record per subject with
    an analysed response at the analysis visit (AVAL 1/0, AVALC Y/N, ANL01FL=Y); a response
    assigned by a composite strategy is a DTYPE ``COMPOSITE`` record."""
    spec = endpoint.analysis
    if spec.model not in BINARY_MODELS:
        raise AdamError(f"{endpoint.id}: {spec.model} is not a binary endpoint")
    protocol = data.protocol
    arms = arm_names(protocol)
    order = visit_order(protocol)
    labels = {v.id: v.label.en for v in protocol.schedule.visits}
    subjects = {s.subject: s for s in data.subjects}
    code = short_code(endpoint.id, set())
    param = f"{endpoint.name.en}: responder (1 = yes)"
    variables: list[XptVariable] = [
        *_bds_keys(blinded),
        var("AVALC", "Analysis Value (C)"),
        *_BDS_FLAGS,
    ]
    rows: list[tuple[Cell, ...]] = []
    for record in analysis_records(data, endpoint):
        response = _cell(record.get("response"))
        if response is None:
            continue
        subject = subjects[str(record["subject"])]
        assert subject.arm is not None
        visit = str(record["visit"])
        on = subject.visit_dates.get(visit)
        composite = record.get("ice_action") == "composite"
        lead: list[Cell] = [studyid, usubjid(studyid, subject.subject), subject.site]
        if not blinded:
            lead += [arms[subject.arm][0], arms[subject.arm][1]]
        ice = [record.get(k) if isinstance(record.get(k), str) else None
               for k in ("ice_event", "ice_strategy", "ice_action")]
        rows.append(tuple([
            *lead, code, param, labels.get(visit, visit), order.get(visit),
            None if composite else date_cell(on),
            None if composite else study_day(on, treatment_start(subject)),
            response, "Y" if response == 1.0 else "N", "COMPOSITE" if composite else None,
            "Y", *ice,
        ]))
    label = f"Endpoint {endpoint.id}"
    return XptDataset(name, label if len(label) <= 40 else f"Endpoint dataset {name}",
                      tuple(variables), tuple(rows))


def binary_methods(endpoint: Endpoint) -> dict[str, str]:
    """Return the Define method texts of a binary endpoint's BDS dataset."""
    spec = endpoint.analysis
    rule = spec.responder_if or "outcome field = 1"
    return {
        "TRTP": "TRT01P from ADSL.",
        "TRTPN": "TRT01PN from ADSL.",
        "AVISIT": "Label of the analysis visit.",
        "AVISITN": "Position of the visit in the protocol's schedule (1-based).",
        "ADT": "Date of the analysis visit; null for a composite-strategy record.",
        "ADY": "ADT - TRTSDT + 1 when ADT >= TRTSDT, else ADT - TRTSDT.",
        "AVAL": f"1 when the responder rule {rule} holds at the analysis visit, else 0; the "
        "composite value when a composite strategy applies.",
        "AVALC": "Y when AVAL = 1, N when AVAL = 0.",
        "DTYPE": "COMPOSITE: response assigned by the estimand's composite strategy.",
        "ANL01FL": f"Y on every record: the {spec.model} analysis uses each subject's response "
        f"in the {endpoint.estimand.analysis_set} set (analysis.datasets.endpoint_frame).",
        "ICEID": "Intercurrent event that changed the record, if any.",
        "ICESTRAT": "Estimand strategy for that event.",
        "ICEACT": "What the strategy did (composite, set_missing).",
    }


def bds_methods(endpoint: Endpoint) -> dict[str, str]:
    """Return the Define method text of the derived BDS variables of one endpoint."""
    spec = endpoint.analysis
    outcome = "CHG" if spec.change_from_baseline else "AVAL"
    visits = ", ".join(_analysis_visits(endpoint))
    where = spec.baseline_visit or "first pre-treatment visit with a value"
    return {
        "TRTP": "TRT01P from ADSL.",
        "TRTPN": "TRT01PN from ADSL.",
        "AVISIT": "Label of the scheduled visit at which the value was captured.",
        "AVISITN": "Position of the visit in the protocol's schedule (1-based).",
        "ADT": "Date of the visit (actual date, else planned date) at which the value was "
        "captured; for a derived record, the date of its source visit.",
        "ADY": "ADT - TRTSDT + 1 when ADT >= TRTSDT, else ADT - TRTSDT (no day 0).",
        "AVAL": "Value of the outcome field captured at the visit; on a derived record the "
        "value the estimand strategy assigns.",
        "BASE": f"Value at the baseline visit ({where}) of "
        f"{spec.baseline_field or 'the outcome field'}.",
        "CHG": "AVAL - BASE on post-treatment records; null on the baseline record.",
        "ABLFL": "Y on the record of the baseline visit.",
        "DTYPE": "LOCF: last on-treatment value carried to the analysis visit (while-on-"
        "treatment strategy); COMPOSITE: value assigned by a composite strategy.",
        "ANL01FL": f"Y on the records the primary analysis ({spec.model}) uses: {outcome} at "
        f"{visits} for subjects in the {endpoint.estimand.analysis_set} set, after the "
        "estimand's intercurrent-event strategies (analysis.datasets.endpoint_frame).",
        "ICEID": "Intercurrent event (protocol id) that governs the record, if any.",
        "ICESTRAT": "Estimand strategy for that event.",
        "ICEACT": "What the strategy did: set_missing, truncated, last_on_treatment, "
        "composite.",
        "SRCVIS": "Visit the analysis value comes from.",
    }


def is_continuous(endpoint: Endpoint) -> bool:
    return endpoint.analysis.model in CONTINUOUS_MODELS


def is_binary(endpoint: Endpoint) -> bool:
    return endpoint.analysis.model in BINARY_MODELS

