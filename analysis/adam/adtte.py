"""ADTTE: one record per subject per time-to-event endpoint, from the SAP's analysis dataset.

AVAL is the analysed time in days from STARTDT (TRTSDT) to ADT, exactly as the survival
models use it; CNSR is 0 for an event, 1 for censoring at the end of follow-up (last visit,
withdrawal or data cut-off, named in CNSDTDSC) and 2 for censoring at an intercurrent event
handled while on treatment (the estimand strategy shows up as a censoring rule).
"""

from __future__ import annotations

import datetime

from analysis.adam.adsl import treatment_start
from analysis.adam.bds import analysis_records
from analysis.adam.common import AdamError, arm_names, date_cell, short_code, usubjid, var
from analysis.datasets import SubjectData, TrialData, visible_visits
from analysis.exports.xport import Cell, XptDataset, XptVariable
from protocols.model import SURVIVAL_MODELS, Endpoint


def _end_of_follow_up(data: TrialData, subject: SubjectData) -> str:
    """Name the date follow-up was censored at (as analysis.datasets computes it)."""
    visits = visible_visits(data, subject)
    dates = [d for v, d in subject.visit_dates.items() if v in visits]
    start = subject.randomized_on
    end: datetime.date | None = max(dates) if dates else start
    described = "Last visit date" if dates else "Treatment start date"
    if subject.withdrawn_on is not None and (end is None or not dates
                                             or subject.withdrawn_on < end):
        end, described = subject.withdrawn_on, "Withdrawal date"
    if data.cutoff_on is not None and end is not None and data.cutoff_on < end:
        described = "Data cut-off date"
    return described


def parameter_codes(data: TrialData) -> dict[str, str]:
    """Return endpoint id -> PARAMCD of every time-to-event endpoint."""
    taken: set[str] = set()
    return {
        e.id: short_code(e.id, taken)
        for e in data.protocol.endpoints if e.analysis.model in SURVIVAL_MODELS
    }


def build_adtte(data: TrialData, *, studyid: str, blinded: bool) -> XptDataset | None:
    """Return ADTTE for the protocol's time-to-event endpoints (None when it has none)."""
    protocol = data.protocol
    endpoints = [e for e in protocol.endpoints if e.analysis.model in SURVIVAL_MODELS]
    if not endpoints:
        return None
    arms = arm_names(protocol)
    codes = parameter_codes(data)
    subjects = {s.subject: s for s in data.subjects}
    variables: list[XptVariable] = [
        var("STUDYID", "Study Identifier", origin="Predecessor"),
        var("USUBJID", "Unique Subject Identifier", origin="Predecessor"),
        var("SITEID", "Study Site Identifier", origin="Predecessor"),
    ]
    if not blinded:
        variables += [var("TRTP", "Planned Treatment"),
                      var("TRTPN", "Planned Treatment (N)", "num")]
    variables += [
        var("PARAMCD", "Parameter Code", origin="Assigned"),
        var("PARAM", "Parameter", origin="Assigned"),
        var("STARTDT", "Time-to-Event Origin Date for Subject", "num"),
        var("ADT", "Analysis Date", "num"),
        var("AVAL", "Analysis Value", "num"),
        var("CNSR", "Censor", "num"),
        var("EVNTDESC", "Event or Censoring Description"),
        var("CNSDTDSC", "Censor Date Description"),
        var("ICEID", "Governing Intercurrent Event"),
        var("ICESTRAT", "Intercurrent Event Strategy"),
    ]
    rows: list[tuple[Cell, ...]] = []
    for endpoint in endpoints:
        rows += _rows(data, endpoint, subjects, codes[endpoint.id], studyid, blinded, arms)
    return XptDataset("ADTTE", "Time-to-Event Analysis Dataset", tuple(variables), tuple(rows))


def _rows(
    data: TrialData, endpoint: Endpoint, subjects: dict[str, SubjectData], code: str,
    studyid: str, blinded: bool, arms: dict[str, tuple[str, int]],
) -> list[tuple[Cell, ...]]:
    param = f"{endpoint.name.en} (days)"
    out: list[tuple[Cell, ...]] = []
    for record in analysis_records(data, endpoint):
        time, event = record.get("time"), record.get("event")
        if time is None or event is None or time != time or event != event:
            continue
        subject = subjects[str(record["subject"])]
        start = treatment_start(subject)
        if start is None:
            raise AdamError(f"{subject.subject}: time to event without a treatment start")
        ended_on = start + datetime.timedelta(days=int(time))
        action = record.get("ice_action")
        ice_event, strategy = record.get("ice_event"), record.get("ice_strategy")
        if float(event) == 1.0:
            censor = 0
            described = (
                f"Intercurrent event {ice_event} (composite strategy)"
                if action == "event_at_ice" else f"Event: {endpoint.analysis.event_if}"
            )
            censor_date = None
        elif action == "censored":
            censor, described = 2, f"Censored at intercurrent event {ice_event}"
            censor_date = f"Date of intercurrent event {ice_event}"
        else:
            censor, described = 1, "Censored at end of follow-up"
            censor_date = _end_of_follow_up(data, subject)
        lead: list[Cell] = [studyid, usubjid(studyid, subject.subject), subject.site]
        if not blinded:
            assert subject.arm is not None
            lead += [arms[subject.arm][0], arms[subject.arm][1]]
        out.append(tuple([*lead,
            code, param, date_cell(start), date_cell(ended_on), float(time), censor,
            described, censor_date, ice_event if isinstance(ice_event, str) else None,
            strategy if isinstance(strategy, str) else None,
        ]))
    return out


ADTTE_METHODS = {
    "STARTDT": "TRTSDT from ADSL (time origin).",
    "ADT": "STARTDT + AVAL days: the event date, or the censoring date.",
    "AVAL": "Days from STARTDT to the event (first visit where the endpoint's event rule "
    "holds, dated by its event date field) or to censoring, after the estimand's "
    "intercurrent-event strategies (analysis.datasets.endpoint_frame).",
    "CNSR": "0 = event; 1 = censored at the end of follow-up (last visit, withdrawal or data "
    "cut-off); 2 = censored at an intercurrent event handled while on treatment.",
    "EVNTDESC": "Describes the event or the reason for censoring.",
    "CNSDTDSC": "Names the date used for censoring.",
    "TRTP": "TRT01P from ADSL.",
    "TRTPN": "TRT01PN from ADSL.",
    "ICEID": "Intercurrent event that changed the record (censoring or composite event).",
    "ICESTRAT": "Estimand strategy for that event.",
}
