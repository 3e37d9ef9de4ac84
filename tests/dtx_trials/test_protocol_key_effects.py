"""Every key of the protocol language has an effect (issue #16).

For every leaf of the protocol JSON Schema (`protocols.schema.schema_leaves()`, the keys
`dtx protocol schema` documents), exactly one of:

- a probe below changes that key in a library protocol and shows an observable difference in
  what the platform does with it: allocations, form validation, the visit schedule, the
  analysis output, eligibility, adherence, access or what a role sees — through the same
  functions the app calls (a probe may instead show that the validator refuses the change);
- the key is descriptive (titles, descriptions: `protocols.schema.DESCRIPTIVE_KEYS`, printed by
  `dtx protocol schema --descriptive`);
- its effect is built in another issue: `PENDING_OTHER_ISSUES`, the one place listing them.

A new key with none of the three fails `test_every_schema_key_is_covered_once`.

Each probe checks that its change touches the key it is about (and only the companion keys it
names), so a probe cannot pass by changing something else.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from sqlalchemy import select

from analysis.datasets import SubjectData
from analysis.exports.data import (
    DeviceValue,
    ExportData,
    ExportError,
    FormValue,
    SiteInfo,
    SubjectRecord,
    TrialMeta,
    VisitDate,
    exportable_fields,
)
from analysis.exports.deid import apply_profile
from analysis.exports.xpt import build_xpt_exports
from analysis.report_builder import protocol_identity
from analysis.sap import run_sap
from analysis.simulation import simulate_trial_data
from dtx_trials.api.blinding import allocation_schema
from dtx_trials.extensions import db
from dtx_trials.models import Notification, Participant, Site, Trial
from dtx_trials.models.users import Role
from dtx_trials.services import (
    analyses,
    dashboard,
    devices,
    epro,
    forms,
    participants,
    protocols,
    trials,
)
from dtx_trials.services import randomization as shell
from dtx_trials.services.access import Actor, Grant, sees_arms
from dtx_trials.services.errors import DomainError
from dtx_trials.services.simulation import insert_enrolled_mci_participants
from ecrf.checks import evaluate_eligibility, evaluate_form
from ecrf.render import form_to_json
from ecrf.schedule import epro_windows, plan_visits, reminder_due, replan_after
from protocols.countries import alpha3
from protocols.loader import load_protocol_report
from protocols.model import Protocol
from protocols.schema import DESCRIPTIVE_KEYS, schema_leaves
from protocols.validation import strata_warning
from randomization.designs import allocate
from randomization.draws import RNG_ALGORITHM
from randomization.state import RandomizationState
from tests.conftest import _clean
from tests.dtx_trials.trial_flow import LIBRARY
from tests.helpers import CLI, PASSWORD, make_user

#: Keys whose effect another issue builds; listed here, in one place, so that the key-effect
#: test still enumerates every key of the schema.
PENDING_OTHER_ISSUES: dict[str, str] = {
}

LIBRARY_FILES = {
    "mci": "cognitive_impairment.yaml",
    "t2d": "type2_diabetes.yaml",
    "myopia": "pediatric_myopia.yaml",
    # a three-arm trial with a declared confirmatory family (graphical procedure)
    "three": str(Path(__file__).resolve().parents[1] / "analysis" / "data" / "three_arm.yaml"),
}
TODAY = datetime.date(2026, 11, 2)

Doc = dict[str, Any]
Change = Callable[[Doc], None]


@functools.cache
def _library(name: str) -> Doc:
    text = (LIBRARY / LIBRARY_FILES[name]).read_text(encoding="utf-8")
    return yaml.load(text, Loader=yaml.CSafeLoader)  # type: ignore[no-any-return]


def library_doc(name: str) -> Doc:
    """A fresh copy of a library protocol as plain data."""
    return copy.deepcopy(_library(name))


def dump(doc: Doc) -> str:
    return yaml.dump(doc, Dumper=yaml.CSafeDumper, allow_unicode=True, sort_keys=False)


def build(doc: Doc) -> tuple[Protocol | None, list[str]]:
    return _build_text(dump(doc))


@functools.lru_cache(maxsize=64)
def _build_text(text: str) -> tuple[Protocol | None, list[str]]:
    """Load (and validate) a document once: base documents recur across probes."""
    report = load_protocol_report(text, "probe.yaml")
    return report.protocol, [f"{i.path}: {i.message}" for i in report.errors]


# ------------------------------------------------------------------ document helpers


def by_id(items: list[Doc], ident: str, key: str = "id") -> Doc:
    return next(item for item in items if item[key] == ident)


def form(doc: Doc, form_id: str) -> Doc:
    return by_id(doc["forms"], form_id)


def fld(doc: Doc, field_id: str) -> Doc:
    return next(f for fm in doc["forms"] for f in fm["fields"] if f["id"] == field_id)


def endpoint(doc: Doc, endpoint_id: str) -> Doc:
    return by_id(doc["endpoints"], endpoint_id)


def analysis(doc: Doc, endpoint_id: str) -> Doc:
    return endpoint(doc, endpoint_id)["analysis"]  # type: ignore[no-any-return]


def keep_endpoints(*ids: str, primary: str | None = None, sensitivity: bool = False) -> Change:
    """Keep only these endpoints (the first, or `primary`, made primary), for a fast SAP."""

    def change(doc: Doc) -> None:
        kept = [copy.deepcopy(endpoint(doc, i)) for i in ids]
        for e in kept:
            if e["role"] == "primary" and e["id"] != (primary or ids[0]):
                e["role"] = "secondary"
            if e["id"] == (primary or ids[0]):
                e["role"] = "primary"
            if not sensitivity:
                e["analysis"].pop("sensitivity", None)
        doc["endpoints"] = kept

    return change


def changed_keys(a: object, b: object, path: str = "") -> set[str]:
    """Return the schema paths (list indices as []) whose values differ between two documents."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for key in set(a) | set(b):
            sub = f"{path}.{key}" if path else key
            out |= changed_keys(a.get(key), b.get(key), sub)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if all(not isinstance(x, dict | list) for x in [*a, *b]):
            return set() if a == b else {path + "[]"}
        out = set()
        for k in range(max(len(a), len(b))):
            out |= changed_keys(a[k] if k < len(a) else None, b[k] if k < len(b) else None,
                                path + "[]")
        return out
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        present = a if a is not None else b
        return changed_keys(present, {} if isinstance(present, dict) else [], path) or {path}
    return set() if a == b else {path}


# ------------------------------------------------------------------ observers (pure)

SECRET = bytes.fromhex("5e" * 32)


def _screening_values(protocol: Protocol, j: int) -> dict[str, object]:
    """Deterministic screening values of participant j for every numeric/choice field."""
    values: dict[str, object] = {}
    for fm in protocol.forms:
        for f in fm.fields:
            if f.type in ("integer", "decimal", "slider", "calculated"):
                low = float(f.min) if isinstance(f.min, int | float) else 0.0
                high = float(f.max) if isinstance(f.max, int | float) else low + 30
                span = high - low
                value = low + ((j * 7919) % 97) / 96 * span
                values[f.id] = round(value) if f.type != "decimal" else round(value, 2)
            elif f.type in ("single_choice",) and f.choices:
                values[f.id] = f.choices[(j * 5 + 1) % len(f.choices)].code
            elif f.type == "yesno":
                values[f.id] = "1" if (j * 3) % 4 else "0"
    return values


def allocations(
    n: int = 40, missing: str | None = None, by_visit: bool = False
) -> Callable[[Protocol], object]:
    """What the randomization service would allocate to n participants, through the shell's
    own design builder and stratum derivation (the path every allocation takes).

    Every ninth participant lacks the screening value `missing` (if given). With `by_visit`,
    values are recorded per visit, each pre-randomization visit with different ones.
    """

    def observe(protocol: Protocol) -> object:
        design = shell.design_for(protocol)
        sites = [s.code for s in protocol.sites.initial_sites]
        state = RandomizationState()
        out: list[object] = []
        seq = 0
        for j in range(n):
            values = _screening_values(protocol, j)
            if missing is not None and j % 9 == 8:
                values.pop(missing, None)
            try:
                visits = {
                    v.id: _screening_values(protocol, j + 3 * k)
                    for k, v in enumerate(protocol.schedule.visits)
                    if v.anchor != "randomization" or v.day <= 0
                } if by_visit else None
                key, factors = shell.derive_stratum(
                    protocol, {} if by_visit else values, sites[j % len(sites)], visits)
            except DomainError as exc:
                out.append(("refused", exc.message))
                continue
            seq += 1
            result, state = allocate(
                design, state, secret=SECRET, model=protocol.code, seq_no=seq, stratum_key=key,
                factors=factors, algorithm=RNG_ALGORITHM,
            )
            out.append((key, result.arm, result.evidence.get("probabilities")))
        return out

    return observe


def sap(
    n: int = 48, edit: Callable[[SubjectData], SubjectData] | None = None
) -> Callable[[Protocol], object]:
    """The analysis plan's output on simulated data of the protocol (`run_sap`, unblinded);
    `edit` adjusts each simulated subject (e.g. dates the simulator sets to the visit date)."""

    def observe(protocol: Protocol) -> object:
        data = simulate_trial_data(protocol, n, seed=11)
        if edit is not None:
            data = replace(data, subjects=tuple(edit(s) for s in data.subjects))
        return run_sap(data, blinded=False, seed=5).to_dict()

    return observe


def rescue_a_month_before_the_visit(subject: SubjectData) -> SubjectData:
    """Rescue started 30 days before the visit that records it (the simulator uses the visit
    date for every date field)."""
    visits = {}
    for visit, values in subject.visits.items():
        on = subject.visit_dates.get(visit)
        if values.get("rescue_started") == "1" and on is not None:
            values = {**values, "rescue_on": (on - datetime.timedelta(days=30)).isoformat()}
        visits[visit] = values
    return replace(subject, visits=visits)


def dated_events(subject: SubjectData) -> SubjectData:
    """Dates the simulator sets to the visit date moved 30 days earlier (rescue, a
    cholinesterase inhibitor), and a glucose-lowering medication log entry for every rescue,
    so intercurrent events precede the visit that records them."""
    visits = {}
    log: list[dict[str, object]] = []
    for visit, values in subject.visits.items():
        on = subject.visit_dates.get(visit)
        if on is not None:
            month_before = (on - datetime.timedelta(days=30)).isoformat()
            if values.get("rescue_started") == "1":
                values = {**values, "rescue_on": month_before}
                log.append({"dm_med_name": "gliclazide", "dm_med_class": "su",
                            "dm_med_start_on": month_before, "dm_med_is_rescue": "1"})
            if values.get("achei_started") == "1":
                values = {**values, "achei_start_on": month_before}
        visits[visit] = values
    repeats = {**subject.repeats, "diabetes_meds": tuple(log)} if log else subject.repeats
    return replace(subject, visits=visits, repeats=repeats)


def event(doc: Doc, event_id: str) -> Doc:
    return by_id(doc["intercurrent_events"], event_id)


def estimand_event(doc: Doc, endpoint_id: str, event_id: str) -> Doc:
    return by_id(endpoint(doc, endpoint_id)["estimand"]["intercurrent_events"], event_id, "event")


def rescue_from_the_log(doc: Doc) -> None:
    """T2D: the rescue event read from the medication log instead of the end-of-study form."""
    rescue = event(doc, "rescue")
    rescue.update(detected_by="repeating_form", form="diabetes_meds",
                  condition="[dm_med_is_rescue] = '1'", date_field="dm_med_start_on")


def _rename_hypothesis(doc: Doc, old: str, new: str) -> None:
    family = doc["multiplicity"]
    by_id(family["hypotheses"], old)["id"] = new
    for t in family["transitions"]:
        t["from"] = new if t["from"] == old else t["from"]
        t["to"] = new if t["to"] == old else t["to"]


def form_check(form_id: str, values: dict[str, object], *, submit: bool = True,
               today: datetime.date = TODAY) -> Callable[[Protocol], object]:
    """What the form engine says of these values (errors, warnings, derived, hidden)."""

    def observe(protocol: Protocol) -> object:
        result = evaluate_form(protocol.form(form_id), values, today=today, submit=submit)
        return (
            dict(result.errors), [w for w in result.warnings], dict(result.derived),
            result.hidden, result.invalid, result.failed_checks, dict(result.values),
        )

    return observe


def rendered(form_id: str, language: str = "en") -> Callable[[Protocol], object]:
    """The form description the API and pages render (GET /forms/{form})."""
    return lambda protocol: form_to_json(protocol.form(form_id), language)


def schedule() -> Callable[[Protocol], object]:
    """Planned dates and windows for known anchor dates."""
    anchors = {"screening": TODAY, "enrollment": TODAY + datetime.timedelta(days=3),
               "randomization": TODAY + datetime.timedelta(days=5)}
    return lambda protocol: plan_visits(protocol.schedule, anchors)


def replanned(visit_id: str) -> Callable[[Protocol], object]:
    """The later visits re-planned when a visit's actual date is recorded (services'
    record_visit_date applies exactly these; tests/dtx_trials/test_visits.py)."""
    return lambda protocol: replan_after(
        protocol.schedule, visit_id, TODAY - datetime.timedelta(days=5)
    )


def questionnaire_windows() -> Callable[[Protocol], object]:
    """The scheduled ePRO windows and whether a reminder is due 30 h after a link (the same
    functions `dtx epro tick` uses, services/epro_schedule.py)."""
    sent = datetime.datetime(2026, 1, 1, 9, tzinfo=datetime.UTC)
    dates = {"week_4": TODAY + datetime.timedelta(days=28),
             "week_12": TODAY + datetime.timedelta(days=84)}
    return lambda protocol: [
        (w, reminder_due(w, sent, sent + datetime.timedelta(hours=30)))
        for w in epro_windows(protocol.schedule.epro, dates)
    ]


def with_epro_window(doc: Doc) -> None:
    doc["schedule"]["epro"] = [{"form": "app_experience", "visit": "week_4", "opens": -3,
                                "closes": 4, "remind_after_hours": 24}]


def with_weekly_window(doc: Doc) -> None:
    doc["schedule"]["epro"] = [{"form": "app_experience", "visit": "week_4", "opens": 0,
                                "closes": 2, "every_days": 7, "times": 3}]


def safety_triggers() -> Callable[[Protocol], object]:
    """The SAE and alert rules a serious AE entry and a low app-ease answer set off."""
    from dtx_trials.services.safety import triggered

    sae = {"ae_term": "fall", "ae_serious": "1", "ae_severity": "mild"}
    return lambda protocol: [
        *triggered(protocol, "adverse_events", sae),
        *triggered(protocol, "app_experience", {"app_ease": 1}),
    ]


def with_safety(doc: Doc) -> None:
    doc["safety"] = {
        "form": "adverse_events", "serious_if": "[ae_serious] = '1'",
        "report_within_hours": 24, "notify": ["sponsor_admin", "investigator", "monitor"],
        "alerts": [{
            "id": "app_distress", "form": "app_experience", "when": "[app_ease] <= 2",
            "message": {"en": "Very hard to use"}, "notify": ["investigator", "coordinator"],
            "escalate_after_hours": 4, "escalate_to": ["sponsor_admin", "monitor"],
        }],
    }


def comprehension() -> Callable[[Protocol], object]:
    """Which comprehension questions a signer's answers get wrong (remote eConsent)."""
    from dtx_trials.services.econsent import wrong_answers

    return lambda protocol: wrong_answers(protocol.consents[0], {"q1": "a"})


def with_question(doc: Doc) -> None:
    doc["consents"][0]["comprehension"] = [{
        "id": "q1", "text": {"en": "Can you stop at any time?"},
        "choices": [{"code": "a", "label": {"en": "Yes"}}, {"code": "b", "label": {"en": "No"}}],
        "answer": "a",
    }]


def eligibility(count: int = 24) -> Callable[[Protocol], object]:
    """Eligibility decisions for a spread of screening values."""

    def observe(protocol: Protocol) -> object:
        return [
            evaluate_eligibility(protocol.eligibility, _screening_values(protocol, j), today=TODAY)
            for j in range(count)
        ]

    return observe


def export_columns(form_id: str) -> Callable[[Protocol], object]:
    """The fields exports may carry for a form."""
    return lambda protocol: [f.id for f in exportable_fields(protocol.form(form_id))]


def safe_harbor_columns(form_id: str) -> Callable[[Protocol], object]:
    """The fields of a form a safe_harbor export carries, and how a value of each reads."""

    def observe(protocol: Protocol) -> object:
        form_def = protocol.form(form_id)
        subject = SubjectRecord("S1", "X", "enrolled")
        values = tuple(FormValue("S1", protocol.schedule.visits[0].id, form_id, f.id,
                                 "call 13812345678") for f in exportable_fields(form_def))
        data = ExportData(
            trial=TrialMeta(code=protocol.code, title=protocol.title.en, protocol_version="1",
                            sponsor="probe"),
            forms=protocol.forms, visits=protocol.schedule.visits, sites=(),
            subjects=(subject,), values=values,
            exported_at=datetime.datetime(2026, 11, 2, tzinfo=datetime.UTC), cdisc=protocol.cdisc,
        )
        safe = apply_profile(data, "safe_harbor", key=b"probe-key")
        return sorted((v.field_id, str(v.value)) for v in safe.values)

    return observe


def epro_form(form_id: str, visit: str) -> Callable[[Protocol], object]:
    """Whether an ePRO link may be issued for this form at this visit (the service's check)."""

    def observe(protocol: Protocol) -> object:
        try:
            return epro._participant_form(protocol, form_id, visit).id
        except DomainError as exc:
            return exc.message

    return observe


def unblinding_notice(reason: str) -> Callable[[Protocol], object]:
    """The e-mail an emergency unblinding sends (arm names and codes blacked out)."""

    def observe(protocol: Protocol) -> object:
        return shell.unblinding_message(
            protocol, trial_code=protocol.code, subject_code="S-1", site_code="S",
            randomization_number="R00001", by="Dr A", at=datetime.datetime(2026, 1, 1),
            category="other", reason=reason, recipient="Dr A",
        )

    return observe


# ------------------------------------------------------------------ probes


@dataclass(frozen=True)
class Probe:
    """Change `key` in library protocol `base` (after `setup`) and compare `observe`."""

    base: str
    change: Change
    observe: Callable[[Protocol], object] | None = None
    setup: Change | None = None
    also: tuple[str, ...] = ()  # companion keys the change must touch too
    refused: str | None = None  # expected validator message instead of an observation
    shell_steps: tuple[str, ...] = field(default=())  # for DB probes


def setter(getter: Callable[[Doc], Doc], key: str, value: object) -> Change:
    def change(doc: Doc) -> None:
        getter(doc)[key] = value

    return change


def popper(getter: Callable[[Doc], Doc], key: str) -> Change:
    def change(doc: Doc) -> None:
        getter(doc).pop(key)

    return change


def both(*changes: Change) -> Change:
    def change(doc: Doc) -> None:
        for c in changes:
            c(doc)

    return change


def rand(doc: Doc) -> Doc:
    return doc["randomization"]  # type: ignore[no-any-return]


def factor(doc: Doc, index: int = 0) -> Doc:
    return rand(doc)["factors"][index]  # type: ignore[no-any-return]


def minimization(**extra: object) -> Change:
    """MCI as a Pocock–Simon minimization (site and MoCA band as factors)."""

    def change(doc: Doc) -> None:
        r = rand(doc)
        r.pop("block_sizes")
        r["method"] = "minimization"
        r["p"] = 0.8
        r.update(extra)

    return change


def method(name: str, **params: object) -> Change:
    def change(doc: Doc) -> None:
        r = rand(doc)
        r.pop("block_sizes", None)
        r["method"] = name
        r.update(params)

    return change


def rename_arm(old: str, new: str) -> Change:
    def change(doc: Doc) -> None:
        by_id(doc["arms"], old, "code")["code"] = new
        for e in doc.get("endpoints", []):
            if e["analysis"].get("reference_arm") == old:
                e["analysis"]["reference_arm"] = new

    return change


def rename_factor(old: str, new: str) -> Change:
    def change(doc: Doc) -> None:
        by_id(rand(doc)["factors"], old)["id"] = new
        for e in doc.get("endpoints", []):
            strata = e["analysis"].get("strata", [])
            e["analysis"]["strata"] = [new if s == old else s for s in strata]

    return change


def sdtm_export(n: int = 4) -> Callable[[Protocol], object]:
    """The SDTM files (XPT rows + define.csv) built from the protocol's cdisc mapping over
    synthetic data: n participants with one record of each mapped form, three days of each
    device stream; participant 0 leaves every optional field blank. An export error is the
    observation when the mapping refuses the data."""

    def observe(protocol: Protocol) -> object:
        stamp = datetime.datetime(2026, 11, 2, 12, 0, tzinfo=datetime.UTC)
        subjects = tuple(
            SubjectRecord(f"S{j}", protocol.sites.initial_sites[0].code, "randomized",
                          consented_on=datetime.date(2026, 9, 1),
                          randomized_on=datetime.date(2026, 9, 2))
            for j in range(n)
        )
        values: list[FormValue] = []
        visit_dates: list[VisitDate] = []
        mapped = {m.form for m in (protocol.cdisc.mappings if protocol.cdisc else ()) if m.form}
        for j, subject in enumerate(subjects):
            answers = _screening_values(protocol, j)
            for k, visit in enumerate(protocol.schedule.visits):
                visit_dates.append(VisitDate(subject.subject_code, visit.id,
                                             datetime.date(2026, 9, 10 + k)))
            for fm in protocol.forms:
                if fm.id not in mapped:
                    continue
                visit_id = next((v.id for v in protocol.schedule.visits if fm.id in v.forms),
                                protocol.schedule.visits[-1].id)
                for f in fm.fields:
                    if j == 0 and not f.required:
                        continue
                    value: object = answers.get(f.id)
                    if f.type == "date":
                        value = f"2026-10-0{j + 1}"
                    elif f.type == "text" and not f.identifier:
                        value = f"text {f.id} {j}"
                    if value is not None and not f.identifier:
                        values.append(FormValue(subject.subject_code, visit_id, fm.id, f.id,
                                                value))  # type: ignore[arg-type]
        device = tuple(
            DeviceValue(f"S{j}", stream.id,
                        datetime.datetime(2026, 9, 3 + day, 20, 0, tzinfo=datetime.UTC),
                        float(day + j), stream.unit)
            for j in range(n) for stream in protocol.device_streams for day in range(3)
        )
        data = ExportData(
            trial=TrialMeta(code=protocol.code, title=protocol.title.en, protocol_version="1",
                            sponsor="probe", blinded=True),
            forms=protocol.forms, visits=protocol.schedule.visits,
            sites=tuple(SiteInfo(s.code, s.name, alpha3(s.country))
                        for s in protocol.sites.initial_sites),
            subjects=subjects, values=tuple(values), exported_at=stamp,
            cdisc=protocol.cdisc, visit_dates=tuple(visit_dates), device_values=device,
        )
        try:
            files = build_xpt_exports(data)
        except ExportError as exc:
            return ["refused", str(exc)]
        return {name: body.hex() for name, body in sorted(files.items())}

    return observe


def cdisc_map(doc: Doc, domain: str, form_or_stream: str | None = None) -> Doc:
    """The library mapping into `domain` (from the named form or stream, if given)."""
    return next(m for m in doc["cdisc"]["mappings"] if m["domain"] == domain and (
        form_or_stream is None or form_or_stream in (m.get("form"), m.get("stream"))))


def cdisc_var(doc: Doc, domain: str, variable: str) -> Doc:
    return by_id(cdisc_map(doc, domain)["variables"], variable, "variable")


def cdisc_test(doc: Doc, domain: str, form: str, testcd: str) -> Doc:
    return by_id(cdisc_map(doc, domain, form)["tests"], testcd, "testcd")


ALLOC = allocations()
SDTM = sdtm_export()
SAP = sap()


def site_projection(protocol: Protocol, site: str) -> object:
    """The per-site view's enrolment projection: 10 enrolled in 10 days, against the site's
    target (dtx_trials.services.dashboard)."""
    days = [datetime.date(2026, 6, day) for day in range(1, 11)]
    target = dashboard.site_targets(protocol).get(site)
    return dashboard.project_enrollment(days, target, datetime.date(2026, 6, 10))


def report_identity(protocol: Protocol) -> object:
    """The title-page facts the report prints, in both editions (analysis.report_builder)."""
    return [protocol_identity(protocol, "en"), protocol_identity(protocol, "zh")]


MOCA_ONLY = keep_endpoints("moca_change_w24")
T2D_PRIMARY = keep_endpoints("hba1c_change_w24")
SAP_DATED = sap(edit=dated_events)
AE_VALUES = {"ae_term": "headache", "ae_onset_on": "2026-10-01", "ae_severity": "mild",
             "ae_serious": "0", "ae_related": "not_related", "ae_resolved_on": "2026-09-01"}

PROBES: dict[str, Probe] = {
    # ---- identification
    "code": Probe("mci", setter(lambda d: d, "code", "MCI-OTHER-01"), shell_steps=("upload",)),
    "sponsor": Probe("mci", setter(lambda d: d, "sponsor", "Other Sponsor Ltd"), report_identity),
    "product.name.en": Probe("mci", setter(lambda d: d["product"]["name"], "en", "MemoryApp"),
                             report_identity),
    "product.name.zh": Probe("mci", setter(lambda d: d["product"]["name"], "zh", "记忆应用"),
                             report_identity),
    "product.version": Probe("mci", setter(lambda d: d["product"], "version", "9.9.9"),
                             report_identity),
    "indication.en": Probe("mci", setter(lambda d: d["indication"], "en", "Dementia"),
                           report_identity),
    "indication.zh": Probe("mci", setter(lambda d: d["indication"], "zh", "痴呆"),
                           report_identity),
    # ---- arms
    "arms[].code": Probe("mci", rename_arm("sham", "sham_games"), ALLOC,
                         also=("endpoints[].analysis.reference_arm",)),
    "arms[].ratio": Probe("myopia", setter(lambda d: d["arms"][0], "ratio", 2), ALLOC),
    "arms[].is_control": Probe(
        "mci",
        both(setter(lambda d: by_id(d["arms"], "sham", "code"), "is_control", False),
             setter(lambda d: by_id(d["arms"], "cogtrain", "code"), "is_control", True)),
        SAP, setup=both(MOCA_ONLY, popper(lambda d: analysis(d, "moca_change_w24"),
                                          "reference_arm")),
    ),
    "arms[].name.en": Probe(
        "mci", setter(lambda d: d["arms"][1]["name"], "en", "Placebo games"),
        unblinding_notice("was it Sham training (non-adaptive games)?"),
    ),
    "arms[].name.zh": Probe(
        "mci", setter(lambda d: d["arms"][1]["name"], "zh", "安慰游戏"),
        unblinding_notice("是否为假训练（非自适应游戏）"),
    ),
    # ---- languages: declaring them decides which texts are accepted (and their coverage)
    "languages[]": Probe(
        "mci",
        lambda d: d.__setitem__("languages", ["zh-Hant"]),
        refused="text in 'zh', which the protocol does not declare",
    ),
    # ---- blinding
    "blinding.level": Probe(
        "mci",
        lambda d: d.__setitem__("blinding", {"level": "open"}),
        shell_steps=("randomize",),
        also=("blinding.blinded_roles[]", "blinding.activation_code_prefix",
              "blinding.unblinding_notify[]"),
    ),
    "blinding.blinded_roles[]": Probe(
        "mci",
        setter(lambda d: d["blinding"], "blinded_roles",
               ["participant", "investigator", "coordinator", "outcome_assessor"]),
        shell_steps=("randomize",),
    ),
    "blinding.activation_code_prefix": Probe(
        "mci", setter(lambda d: d["blinding"], "activation_code_prefix", "COG"),
        shell_steps=("randomize",),
    ),
    "blinding.comparative_review[]": Probe(
        "mci", setter(lambda d: d["blinding"], "comparative_review", ["statistician"]),
        shell_steps=("review",),
    ),
    "blinding.unblinding_notify[]": Probe(
        "mci", setter(lambda d: d["blinding"], "unblinding_notify", ["auditor"]),
        shell_steps=("randomize", "unblind"),
    ),
    # ---- randomization
    "randomization.method": Probe("t2d", method("simple"), ALLOC,
                                  also=("randomization.block_sizes[]",)),
    "randomization.block_sizes[]": Probe("mci", setter(rand, "block_sizes", [2]), ALLOC),
    "randomization.factors[].visit": Probe(
        "mci", setter(lambda d: factor(d), "visit", "baseline"), allocations(by_visit=True),
        setup=lambda d: by_id(d["schedule"]["visits"], "baseline")["forms"].append("moca"),
    ),
    "randomization.factors[].id": Probe(
        "mci", rename_factor("moca_band", "moca_group"), ALLOC,
        also=("endpoints[].analysis.strata[]",),
    ),
    "randomization.factors[].field": Probe(
        "mci", setter(factor, "field", "age"), allocations(missing="moca_total"),
    ),
    "randomization.factors[].levels[].code": Probe(
        "mci", setter(lambda d: factor(d)["levels"][0], "code", "low_moca"), ALLOC,
    ),
    "randomization.factors[].levels[].when": Probe(
        "mci", setter(lambda d: factor(d)["levels"][0], "when", "[moca_total] <= 15"), ALLOC,
    ),
    "randomization.factors[].levels[].otherwise": Probe(
        "mci",
        both(popper(lambda d: factor(d)["levels"][1], "otherwise"),
             setter(lambda d: factor(d)["levels"][1], "when", "[moca_total] >= 22 and "
                    "[moca_total] <= 25")),
        refused="do not cover values of 'moca_total': 26–30",
        also=("randomization.factors[].levels[].when",),
    ),
    "randomization.factors[].weight": Probe(
        "mci", setter(factor, "weight", 0), ALLOC, setup=minimization(),
    ),
    "randomization.stratify_by_site": Probe("mci", setter(rand, "stratify_by_site", False), ALLOC),
    "randomization.site_weight": Probe("mci", setter(rand, "site_weight", 3), ALLOC,
                                       setup=minimization()),
    "randomization.imbalance": Probe("myopia", setter(rand, "imbalance", "variance"),
                                     allocations(n=200)),
    "randomization.p": Probe("mci", setter(rand, "p", 0.95), ALLOC, setup=minimization()),
    "randomization.burn_in": Probe("mci", setter(rand, "burn_in", 10), ALLOC,
                                   setup=minimization()),
    # ---- CDISC mapping (SDTM export)
    "cdisc.sdtmig": Probe("mci", setter(lambda d: d["cdisc"], "sdtmig", "3.3"),
                          refused="'3.3' is not one of 3.4"),
    "cdisc.ct_version": Probe("mci", setter(lambda d: d["cdisc"], "ct_version", "2025-03-28"),
                              SDTM),
    "cdisc.mappings[].domain": Probe("mci", setter(lambda d: cdisc_map(d, "QS", "moca"),
                                                   "domain", "VS"), SDTM,
                                     also=("cdisc.mappings[].category",)),
    "cdisc.mappings[].form": Probe("mci", setter(lambda d: cdisc_map(d, "AE"), "form",
                                                 "con_meds"),
                                   refused="form 'con_meds' has no field 'ae_term'"),
    "cdisc.mappings[].stream": Probe("myopia", setter(lambda d: cdisc_map(d, "EX"), "stream",
                                                      "outdoor_minutes"), SDTM),
    "cdisc.mappings[].category": Probe("mci", setter(lambda d: cdisc_map(d, "QS", "adas_cog"),
                                                     "category", "ADAS-COG 13"), SDTM),
    "cdisc.mappings[].method": Probe("myopia", setter(lambda d: cdisc_map(d, "OE", "refraction"),
                                                      "method", "REFRACTOMETRY"), SDTM),
    "cdisc.mappings[].date_field": Probe("t2d", popper(lambda d: cdisc_map(d, "LB", "lab"),
                                                       "date_field"), SDTM),
    "cdisc.mappings[].variables[].variable": Probe(
        "mci", setter(lambda d: cdisc_var(d, "AE", "AEACN"), "variable", "AEACNOTH"), SDTM),
    "cdisc.mappings[].variables[].field": Probe(
        "mci", setter(lambda d: cdisc_var(d, "CM", "CMINDC"), "field", "cm_name"), SDTM),
    "cdisc.mappings[].variables[].value": Probe(
        "mci", setter(lambda d: cdisc_var(d, "AE", "AEACN"), "value", "UNKNOWN"), SDTM),
    "cdisc.mappings[].variables[].codelist": Probe(
        "mci", setter(lambda d: cdisc_var(d, "AE", "AESEV"), "codelist", "C66742"),
        refused="'MILD' is not a C66742 (NY) term"),
    "cdisc.mappings[].variables[].terms[].code": Probe(
        "mci", setter(lambda d: cdisc_var(d, "AE", "AESEV")["terms"][0], "code", "light"),
        refused="'light' is not a code of field 'ae_severity'"),
    "cdisc.mappings[].variables[].terms[].value": Probe(
        "mci", setter(lambda d: cdisc_var(d, "AE", "AESEV")["terms"][0], "value", "MODERATE"),
        SDTM),
    "cdisc.mappings[].variables[].nullable": Probe(
        "mci", setter(lambda d: cdisc_var(d, "AE", "AEENDTC"), "nullable", False), SDTM),
    "cdisc.mappings[].tests[].field": Probe(
        "t2d", setter(lambda d: cdisc_test(d, "VS", "vitals", "WEIGHT"), "field", "height_cm"),
        SDTM),
    "cdisc.mappings[].tests[].testcd": Probe(
        "t2d", setter(lambda d: cdisc_test(d, "VS", "vitals", "WEIGHT"), "testcd", "WT"), SDTM),
    "cdisc.mappings[].tests[].test": Probe(
        "t2d", setter(lambda d: cdisc_test(d, "VS", "vitals", "WEIGHT"), "test", "Body Weight"),
        SDTM),
    "cdisc.mappings[].tests[].unit": Probe(
        "t2d", setter(lambda d: cdisc_test(d, "VS", "vitals", "WEIGHT"), "unit", "g"), SDTM),
    "cdisc.mappings[].tests[].laterality": Probe(
        "myopia",
        setter(lambda d: cdisc_map(d, "OE", "biometry")["tests"][0], "laterality", "BILATERAL"),
        SDTM),
    "randomization.overall_weight": Probe("mci", setter(rand, "overall_weight", 2), ALLOC,
                                          setup=minimization()),
    "randomization.efron_p": Probe("mci", setter(rand, "efron_p", 0.9), ALLOC,
                                   setup=method("efron", efron_p=0.6)),
    "randomization.bsd_b": Probe("mci", setter(rand, "bsd_b", 1), ALLOC,
                                 setup=method("big_stick", bsd_b=3)),
    "randomization.bud_lambda": Probe("mci", setter(rand, "bud_lambda", 1), ALLOC,
                                      setup=method("block_urn", bud_lambda=3)),
    "randomization.mp_b": Probe("mci", setter(rand, "mp_b", 1), ALLOC,
                                setup=method("maximal", mp_b=3, mp_block_length=12)),
    "randomization.mp_block_length": Probe("mci", setter(rand, "mp_block_length", 4), ALLOC,
                                           setup=method("maximal", mp_b=2, mp_block_length=12)),
    "randomization.caps.trial": Probe("mci", setter(lambda d: rand(d)["caps"], "trial", 2),
                                      shell_steps=("randomize",)),
    "randomization.caps.per_site": Probe("mci", setter(lambda d: rand(d)["caps"], "per_site", 1),
                                         shell_steps=("randomize",)),
    "randomization.caps.per_stratum": Probe(
        "mci", setter(lambda d: rand(d)["caps"], "per_stratum", 1), shell_steps=("randomize",),
    ),
    # ---- sites
    "sites.allow_runtime_sites": Probe("mci", setter(lambda d: d["sites"],
                                                     "allow_runtime_sites", False),
                                       shell_steps=("sites",)),
    "sites.initial[].code": Probe("mci", setter(lambda d: d["sites"]["initial"][3], "code",
                                                "HK02"), shell_steps=("sites",)),
    "sites.initial[].country": Probe("mci", setter(lambda d: d["sites"]["initial"][3], "country",
                                                   "CN"), shell_steps=("sites",)),
    "sites.initial[].timezone": Probe("mci", setter(lambda d: d["sites"]["initial"][0],
                                                    "timezone", "Asia/Urumqi"),
                                      shell_steps=("sites",)),
    # the sponsor dashboard's per-site target and projection (services.dashboard)
    "sites.initial[].target": Probe("mci", setter(lambda d: d["sites"]["initial"][0], "target",
                                                  80), lambda p: site_projection(p, "BJ01")),
    # ---- eligibility
    "eligibility[].id": Probe("mci", setter(lambda d: d["eligibility"][0], "id", "inc_age_band"),
                              eligibility()),
    "eligibility[].kind": Probe("mci", setter(lambda d: d["eligibility"][5], "kind",
                                              "inclusion"), eligibility()),
    "eligibility[].expression": Probe("mci", setter(lambda d: d["eligibility"][0], "expression",
                                                    "[age] >= 70 and [age] <= 85"),
                                      eligibility()),
    # ---- schedule
    "schedule.visits[].id": Probe(
        "mci", setter(lambda d: d["schedule"]["visits"][2], "id", "month_1"), schedule(),
        setup=lambda d: d.pop("endpoints"),
    ),
    "schedule.visits[].day": Probe("mci", setter(lambda d: d["schedule"]["visits"][2], "day", 30),
                                   schedule()),
    "schedule.visits[].window_before": Probe(
        "mci", setter(lambda d: d["schedule"]["visits"][2], "window_before", 3), schedule()),
    "schedule.visits[].window_after": Probe(
        "mci", setter(lambda d: d["schedule"]["visits"][2], "window_after", 3), schedule()),
    "schedule.visits[].anchor": Probe(
        "mci", setter(lambda d: d["schedule"]["visits"][0], "anchor", "screening"), schedule()),
    "schedule.visits[].reanchor": Probe(
        "mci", setter(lambda d: d["schedule"]["visits"][1], "reanchor", True),
        replanned("baseline"),
    ),
    "schedule.epro[].form": Probe(
        "mci", setter(lambda d: d["schedule"]["epro"][0], "form", "adas_cog"),
        setup=with_epro_window, refused="is not answered by the participant",
    ),
    "schedule.epro[].visit": Probe(
        "mci", setter(lambda d: d["schedule"]["epro"][0], "visit", "week_12"),
        questionnaire_windows(), setup=with_epro_window,
    ),
    "schedule.epro[].opens": Probe(
        "mci", setter(lambda d: d["schedule"]["epro"][0], "opens", -1),
        questionnaire_windows(), setup=with_epro_window,
    ),
    "schedule.epro[].closes": Probe(
        "mci", setter(lambda d: d["schedule"]["epro"][0], "closes", 7),
        questionnaire_windows(), setup=with_epro_window,
    ),
    "schedule.epro[].remind_after_hours": Probe(
        "mci", setter(lambda d: d["schedule"]["epro"][0], "remind_after_hours", 48),
        questionnaire_windows(), setup=with_epro_window,
    ),
    # a repeating (weekly) questionnaire: one window per occurrence
    "schedule.epro[].every_days": Probe(
        "mci", setter(lambda d: d["schedule"]["epro"][0], "every_days", 14),
        questionnaire_windows(), setup=with_weekly_window,
    ),
    "schedule.epro[].times": Probe(
        "mci", setter(lambda d: d["schedule"]["epro"][0], "times", 4),
        questionnaire_windows(), setup=with_weekly_window,
    ),
    "schedule.visits[].forms[]": Probe(
        "mci", setter(lambda d: d["schedule"]["visits"][2], "forms", ["adas_cog"]),
        epro_form("app_experience", "week_4"),
    ),
    "schedule.unscheduled_forms[]": Probe(
        "mci", setter(lambda d: d["schedule"], "unscheduled_forms", ["adas_cog", "moca"]),
        shell_steps=("forms",),
    ),
    # ---- forms
    "forms[].id": Probe(
        "mci",
        both(setter(lambda d: form(d, "app_experience"), "id", "app_feedback"),
             lambda d: [v.__setitem__("forms", ["app_feedback" if f == "app_experience" else f
                                                for f in v.get("forms", [])])
                        for v in d["schedule"]["visits"]],
             setter(lambda d: cdisc_map(d, "QS", "app_experience"), "form", "app_feedback")),
        epro_form("app_experience", "week_4"),
        also=("schedule.visits[].forms[]", "cdisc.mappings[].form"),
    ),
    "forms[].respondent": Probe("mci", setter(lambda d: form(d, "app_experience"), "respondent",
                                              "site"), epro_form("app_experience", "week_4")),
    "forms[].repeating": Probe(
        "mci",
        both(setter(lambda d: form(d, "con_meds"), "repeating", False),
             setter(lambda d: d["schedule"], "unscheduled_forms", ["adas_cog", "con_meds"])),
        rendered("con_meds"), also=("schedule.unscheduled_forms[]",),
    ),
    "forms[].fields[].id": Probe(
        "mci", setter(lambda d: fld(d, "app_problem_text"), "id", "app_problem_detail"),
        form_check("app_experience", {"app_problem": "1", "app_problem_text": "freezes"}),
    ),
    "forms[].fields[].type": Probe(
        "mci", setter(lambda d: fld(d, "education_years"), "type", "decimal"),
        form_check("screening", {"education_years": 9.5}, submit=False),
    ),
    "forms[].fields[].required": Probe(
        "mci", setter(lambda d: fld(d, "app_problem"), "required", True),
        form_check("app_experience", {"app_ease": 5}),
    ),
    "forms[].fields[].min": Probe(
        "mci", setter(lambda d: fld(d, "age"), "min", 60),
        form_check("screening", {"age": 55}, submit=False),
    ),
    "forms[].fields[].max": Probe(
        "mci", setter(lambda d: fld(d, "age"), "max", 90),
        form_check("screening", {"age": 95}, submit=False),
    ),
    "forms[].fields[].decimals": Probe(
        "t2d", setter(lambda d: fld(d, "weight_kg"), "decimals", 0),
        form_check("vitals", {"weight_kg": 72.5}, submit=False),
    ),
    "forms[].fields[].max_length": Probe(
        "mci", setter(lambda d: fld(d, "app_problem_text"), "max_length", 5),
        form_check("app_experience", {"app_problem": "1", "app_problem_text": "it freezes"},
                   submit=False),
    ),
    "forms[].fields[].choices[].code": Probe(
        "mci",
        both(setter(lambda d: fld(d, "eos_status")["choices"][4], "code", "other_reason"),
             setter(lambda d: cdisc_var(d, "DS", "DSDECOD")["terms"][4], "code",
                    "other_reason")),
        form_check("end_of_study", {"eos_status": "other"}, submit=False),
        also=("cdisc.mappings[].variables[].terms[].code",),
    ),
    "forms[].fields[].show_if": Probe(
        "mci", setter(lambda d: fld(d, "app_problem_text"), "show_if", "[app_problem] = '0'"),
        form_check("app_experience", {"app_problem": "1", "app_problem_text": "freezes"},
                   submit=False),
    ),
    "forms[].fields[].calculation": Probe(
        "mci", setter(lambda d: fld(d, "moca_total"), "calculation", "[moca_raw]"),
        form_check("moca", {"moca_raw": 20, "moca_edu_point": "1"}),
    ),
    "forms[].fields[].checks[].id": Probe(
        "t2d", setter(lambda d: fld(d, "dbp")["checks"][0], "id", "dbp_below_sbp"),
        form_check("vitals", {"sbp": 110, "dbp": 120}, submit=False),
    ),
    "forms[].fields[].checks[].condition": Probe(
        "t2d", setter(lambda d: fld(d, "dbp")["checks"][0], "condition", "[dbp] < [sbp] + 20"),
        form_check("vitals", {"sbp": 110, "dbp": 120}, submit=False),
    ),
    "forms[].fields[].checks[].severity": Probe(
        "t2d", setter(lambda d: fld(d, "dbp")["checks"][0], "severity", "warning"),
        form_check("vitals", {"sbp": 110, "dbp": 120}, submit=False),
    ),
    "forms[].fields[].allow_missing_codes[]": Probe(
        "mci", setter(lambda d: fld(d, "ae_resolved_on"), "allow_missing_codes", ["not_done"]),
        form_check("adverse_events", {**AE_VALUES, "ae_resolved_on": {"missing": "unknown"}}),
    ),
    "forms[].fields[].identifier": Probe(
        "mci", both(setter(lambda d: fld(d, "cm_indication"), "identifier", True),
                    popper(lambda d: fld(d, "cm_indication"), "classification")),
        export_columns("con_meds"), also=("forms[].fields[].classification",),
        # an identifier is never mapped to SDTM (the validator refuses it): unmap it first
        setup=lambda d: cdisc_map(d, "CM")["variables"].remove(cdisc_var(d, "CM", "CMINDC")),
    ),
    # safe_harbor drops a quasi-identifier (the library classifies the indication free_text:
    # scrubbed and kept, since CMINDC needs it)
    "forms[].fields[].classification": Probe(
        "mci", setter(lambda d: fld(d, "cm_indication"), "classification", "quasi_identifier"),
        safe_harbor_columns("con_meds"),
    ),
    "forms[].checks[].id": Probe(
        "mci", setter(lambda d: form(d, "adverse_events")["checks"][0], "id", "ae_order"),
        form_check("adverse_events", AE_VALUES, submit=False),
    ),
    "forms[].checks[].condition": Probe(
        "mci", setter(lambda d: form(d, "adverse_events")["checks"][0], "condition",
                      "[ae_resolved_on] >= [ae_onset_on] or [ae_serious] = '0'"),
        form_check("adverse_events", AE_VALUES, submit=False),
    ),
    "forms[].checks[].severity": Probe(
        "mci", setter(lambda d: form(d, "adverse_events")["checks"][0], "severity", "warning"),
        form_check("adverse_events", AE_VALUES, submit=False),
    ),
    # ---- device streams (adherence probes run against stored device data, see below)
    "device_streams[].id": Probe(
        "mci", both(setter(lambda d: d["device_streams"][0], "id", "training_time"),
                    setter(lambda d: event(d, "stopped_training"), "stream", "training_time"),
                    setter(lambda d: cdisc_map(d, "EX"), "stream", "training_time")),
        shell_steps=("ingest",), also=("intercurrent_events[].stream", "cdisc.mappings[].stream"),
    ),
    "device_streams[].unit": Probe("mci", setter(lambda d: d["device_streams"][0], "unit", "h"),
                                   shell_steps=("ingest",)),
    "device_streams[].min": Probe("mci", setter(lambda d: d["device_streams"][0], "min", 10),
                                  shell_steps=("ingest",)),
    "device_streams[].max": Probe("mci", setter(lambda d: d["device_streams"][0], "max", 120),
                                  shell_steps=("ingest",)),
    # ---- endpoints and the analysis plan (SAP output on simulated data)
    "endpoints[].id": Probe("mci", setter(lambda d: d["endpoints"][0], "id", "moca_w24"), SAP,
                            setup=MOCA_ONLY),
    "endpoints[].role": Probe(
        "mci",
        both(setter(lambda d: endpoint(d, "moca_change_w24"), "role", "primary"),
             setter(lambda d: endpoint(d, "adas_responder_w24"), "role", "key_secondary")),
        SAP, setup=keep_endpoints("adas_responder_w24", "moca_change_w24"),
    ),
    "endpoints[].estimand.analysis_set": Probe(
        "t2d", setter(lambda d: d["endpoints"][0]["estimand"], "analysis_set", "per_protocol"),
        SAP, setup=T2D_PRIMARY,
    ),
    "endpoints[].analysis.model": Probe(
        "mci", setter(lambda d: analysis(d, "adas_responder_w24"), "model", "risk_difference"),
        SAP, setup=keep_endpoints("adas_responder_w24"),
    ),
    "endpoints[].analysis.outcome_fields[]": Probe(
        "t2d", setter(lambda d: analysis(d, "hba1c_change_w24"), "outcome_fields", ["bmi"]),
        SAP, setup=both(T2D_PRIMARY, popper(lambda d: analysis(d, "hba1c_change_w24"),
                                            "baseline_field"),
                        popper(lambda d: analysis(d, "hba1c_change_w24"), "subgroups")),
    ),
    "endpoints[].analysis.visits[]": Probe(
        "mci", setter(lambda d: analysis(d, "moca_change_w24"), "visits", ["screening"]),
        SAP, setup=MOCA_ONLY,
    ),
    "endpoints[].analysis.baseline_field": Probe(
        "mci", setter(lambda d: analysis(d, "moca_change_w24"), "baseline_field", "age"),
        SAP, setup=MOCA_ONLY,
    ),
    "endpoints[].analysis.baseline_visit": Probe(
        "mci", setter(lambda d: analysis(d, "moca_change_w24"), "baseline_visit", "week_24"),
        SAP, setup=MOCA_ONLY,
    ),
    "endpoints[].analysis.change_from_baseline": Probe(
        "mci", setter(lambda d: analysis(d, "moca_change_w24"), "change_from_baseline", False),
        SAP, setup=MOCA_ONLY,
    ),
    "endpoints[].analysis.responder_if": Probe(
        "mci", setter(lambda d: analysis(d, "adas_responder_w24"), "responder_if",
                      "[adas_total] < [baseline][adas_total] - 2"),
        SAP, setup=keep_endpoints("adas_responder_w24"),
    ),
    "endpoints[].analysis.event_if": Probe(
        "t2d", setter(lambda d: analysis(d, "time_to_rescue_cox"), "event_if",
                      "[rescue_started] = '0'"),
        SAP, setup=keep_endpoints("time_to_rescue_cox"),
    ),
    "endpoints[].analysis.event_date_field": Probe(
        "t2d", setter(lambda d: analysis(d, "time_to_rescue_cox"), "event_date_field", "eos_on"),
        sap(edit=rescue_a_month_before_the_visit), setup=keep_endpoints("time_to_rescue_cox"),
    ),
    "endpoints[].analysis.covariates[]": Probe(
        "mci", setter(lambda d: analysis(d, "moca_change_w24"), "covariates",
                      ["age", "education_years"]), SAP, setup=MOCA_ONLY,
    ),
    "endpoints[].analysis.strata[]": Probe(
        "mci", setter(lambda d: analysis(d, "moca_change_w24"), "strata", []), SAP,
        setup=MOCA_ONLY,
    ),
    "endpoints[].analysis.reference_arm": Probe(
        "mci", setter(lambda d: analysis(d, "moca_change_w24"), "reference_arm", "cogtrain"),
        SAP, setup=MOCA_ONLY,
    ),
    "endpoints[].analysis.alpha": Probe(
        "mci", setter(lambda d: analysis(d, "moca_change_w24"), "alpha", 0.01), SAP,
        setup=MOCA_ONLY,
    ),
    "endpoints[].analysis.sidedness": Probe(
        "mci", setter(lambda d: analysis(d, "moca_change_w24"), "sidedness", "one_sided"),
        refused="one-sided tests are not supported",
    ),
    "endpoints[].analysis.multiplicity_order": Probe(
        "mci",
        both(setter(lambda d: analysis(d, "moca_change_w24"), "multiplicity_order", 2),
             setter(lambda d: analysis(d, "adas_responder_w24"), "multiplicity_order", 1)),
        SAP, setup=both(keep_endpoints("adas_responder_w24", "moca_change_w24"),
                        setter(lambda d: analysis(d, "adas_responder_w24"),
                               "multiplicity_order", 2),
                        setter(lambda d: analysis(d, "moca_change_w24"),
                               "multiplicity_order", 1)),
    ),
    "endpoints[].analysis.covariance": Probe(
        "mci", setter(lambda d: analysis(d, "adas_change_w24"), "covariance",
                      "compound_symmetry"),
        SAP, setup=keep_endpoints("adas_change_w24"),
    ),
    "endpoints[].analysis.sensitivity[].id": Probe(
        "t2d", setter(lambda d: analysis(d, "hba1c_change_w24")["sensitivity"][1], "id", "pp"),
        SAP, setup=keep_endpoints("hba1c_change_w24", sensitivity=True),
    ),
    "endpoints[].analysis.sensitivity[].method": Probe(
        "t2d", setter(lambda d: analysis(d, "hba1c_change_w24")["sensitivity"][1], "method",
                      "complete_case"),
        SAP, setup=keep_endpoints("hba1c_change_w24", sensitivity=True),
    ),
    "endpoints[].analysis.sensitivity[].supplementary": Probe(
        "t2d", setter(lambda d: analysis(d, "hba1c_change_w24")["sensitivity"][0],
                      "supplementary", False),
        SAP, setup=keep_endpoints("hba1c_change_w24", sensitivity=True),
    ),
    "endpoints[].analysis.subgroups[].id": Probe(
        "t2d", setter(lambda d: analysis(d, "hba1c_change_w24")["subgroups"][0], "id", "bmi"),
        SAP, setup=T2D_PRIMARY,
    ),
    "endpoints[].analysis.subgroups[].levels[].code": Probe(
        "t2d", setter(lambda d: analysis(d, "hba1c_change_w24")["subgroups"][0]["levels"][0],
                      "code", "bmi_lt28"), SAP, setup=T2D_PRIMARY,
    ),
    "endpoints[].analysis.subgroups[].levels[].when": Probe(
        "t2d", setter(lambda d: analysis(d, "hba1c_change_w24")["subgroups"][0]["levels"][0],
                      "when", "[bmi] < 25"), SAP, setup=T2D_PRIMARY,
    ),
    "endpoints[].analysis.subgroups[].levels[].otherwise": Probe(
        "t2d",
        both(popper(lambda d: analysis(d, "hba1c_change_w24")["subgroups"][0]["levels"][1],
                    "otherwise"),
             setter(lambda d: analysis(d, "hba1c_change_w24")["subgroups"][0]["levels"][1],
                    "when", "[bmi] >= 32")),
        SAP, setup=T2D_PRIMARY, also=("endpoints[].analysis.subgroups[].levels[].when",),
    ),
    # ---- intercurrent events: detection (counts per arm in the disposition table, strategies
    # applied to the analysis data) and each estimand's strategies
    "intercurrent_events[].id": Probe(
        "mci", both(setter(lambda d: event(d, "started_achei"), "id", "achei"),
                    setter(lambda d: estimand_event(d, "adas_change_w24", "started_achei"),
                           "event", "achei")),
        SAP_DATED, setup=keep_endpoints("adas_change_w24"),
        also=("endpoints[].estimand.intercurrent_events[].event",),
    ),
    "intercurrent_events[].detected_by": Probe(
        "mci", lambda d: event(d, "stopped_training").update(
            detected_by="form_field", condition="[app_problem] = '1'", stream=None,
            inactive_days=None),
        SAP, setup=keep_endpoints("moca_change_w24"),
        also=("intercurrent_events[].condition", "intercurrent_events[].stream",
              "intercurrent_events[].inactive_days"),
    ),
    "intercurrent_events[].condition": Probe(
        "mci", setter(lambda d: event(d, "started_achei"), "condition", "[achei_started] = '0'"),
        SAP, setup=keep_endpoints("moca_change_w24"),
    ),
    "intercurrent_events[].date_field": Probe(
        "mci", setter(lambda d: event(d, "started_achei"), "date_field", "eos_on"),
        SAP_DATED, setup=keep_endpoints("adas_change_w24"),
    ),
    "intercurrent_events[].form": Probe(
        "t2d", lambda d: event(d, "rescue").update(
            form="adverse_events", condition="[ae_serious] = '1'", date_field="ae_onset_on"),
        SAP_DATED, setup=both(T2D_PRIMARY, rescue_from_the_log),
        also=("intercurrent_events[].condition", "intercurrent_events[].date_field"),
    ),
    "intercurrent_events[].stream": Probe(
        "t2d", setter(lambda d: event(d, "stopped_app"), "stream", "glucose_log"), SAP,
        setup=T2D_PRIMARY,
    ),
    "intercurrent_events[].inactive_days": Probe(
        "mci", setter(lambda d: event(d, "stopped_training"), "inactive_days", 3), SAP,
        setup=keep_endpoints("moca_change_w24"),
    ),
    "intercurrent_events[].reasons[]": Probe(
        "mci", setter(lambda d: event(d, "withdrew"), "reasons", ["lost"]), SAP,
        setup=keep_endpoints("moca_change_w24"),
    ),
    "endpoints[].estimand.intercurrent_events[].event": Probe(
        "mci", setter(lambda d: estimand_event(d, "adas_responder_w24", "withdrew"), "event",
                      "started_achei"),
        SAP_DATED, setup=keep_endpoints("adas_responder_w24"),
    ),
    "endpoints[].estimand.intercurrent_events[].strategy": Probe(
        "t2d", setter(lambda d: estimand_event(d, "hba1c_change_w24", "rescue"), "strategy",
                      "hypothetical"),
        SAP_DATED, setup=T2D_PRIMARY,
    ),
    "endpoints[].estimand.intercurrent_events[].composite_value": Probe(
        "mci", setter(lambda d: estimand_event(d, "adas_responder_w24", "stopped_training"),
                      "composite_value", 1),
        SAP, setup=keep_endpoints("adas_responder_w24"),
    ),
    # ---- multiplicity: the declared confirmatory family (three arms, graphical procedure)
    "multiplicity.procedure": Probe(
        "three", both(setter(lambda d: d["multiplicity"], "procedure", "bonferroni"),
                      popper(lambda d: d["multiplicity"], "transitions")),
        SAP, also=("multiplicity.transitions[].from", "multiplicity.transitions[].to",
                   "multiplicity.transitions[].weight"),
    ),
    "multiplicity.alpha": Probe("three", setter(lambda d: d["multiplicity"], "alpha", 0.01),
                                SAP),
    "multiplicity.hypotheses[].id": Probe(
        "three", lambda d: _rename_hypothesis(d, "h1", "h_low_memory"), SAP,
        also=("multiplicity.transitions[].from", "multiplicity.transitions[].to"),
    ),
    "multiplicity.hypotheses[].endpoint": Probe(
        "three", both(setter(lambda d: d["multiplicity"]["hypotheses"][0], "endpoint",
                             "attention_w12"),
                      setter(lambda d: d["multiplicity"]["hypotheses"][2], "endpoint",
                             "memory_w12")), SAP,
    ),
    "multiplicity.hypotheses[].arm": Probe(
        "three", both(setter(lambda d: d["multiplicity"]["hypotheses"][0], "arm", "high"),
                      setter(lambda d: d["multiplicity"]["hypotheses"][1], "arm", "low")), SAP,
    ),
    "multiplicity.hypotheses[].weight": Probe(
        "three", setter(lambda d: d["multiplicity"]["hypotheses"][0], "weight", 0.25), SAP,
    ),
    "multiplicity.transitions[].from": Probe(
        "three", setter(lambda d: d["multiplicity"]["transitions"][1], "from", "h4"), SAP,
        setup=setter(lambda d: d["multiplicity"]["transitions"][5], "weight", 0.5),
    ),
    "multiplicity.transitions[].to": Probe(
        "three", setter(lambda d: d["multiplicity"]["transitions"][1], "to", "h4"), SAP,
    ),
    "multiplicity.transitions[].weight": Probe(
        "three", setter(lambda d: d["multiplicity"]["transitions"][0], "weight", 0.2), SAP,
    ),
    # ---- sample size and consents
    "sample_size.n": Probe("mci", setter(lambda d: d["sample_size"], "n", 40),
                           lambda p: strata_warning(p)),
    "consents[].id": Probe("mci", setter(lambda d: d["consents"][0], "id", "icf"),
                           shell_steps=("consent",)),
    "consents[].version": Probe("mci", setter(lambda d: d["consents"][0], "version", "2.0"),
                                shell_steps=("consent",)),
    "consents[].language": Probe("mci", setter(lambda d: d["consents"][0], "language", "en-GB"),
                                 shell_steps=("consent",)),
    # remote eConsent: which answers the signing page accepts (services.econsent)
    "consents[].comprehension[].id": Probe(
        "mci", setter(lambda d: d["consents"][0]["comprehension"][0], "id", "q2"),
        comprehension(), setup=with_question,
    ),
    "consents[].comprehension[].choices[].code": Probe(
        "mci", both(setter(lambda d: d["consents"][0]["comprehension"][0]["choices"][0], "code",
                           "c"),
                    setter(lambda d: d["consents"][0]["comprehension"][0], "answer", "c")),
        comprehension(), setup=with_question, also=("consents[].comprehension[].answer",),
    ),
    "consents[].comprehension[].answer": Probe(
        "mci", setter(lambda d: d["consents"][0]["comprehension"][0], "answer", "b"),
        comprehension(), setup=with_question,
    ),
    # safety: which SAE and alert rules a submission sets off (services.safety.triggered)
    "safety.form": Probe(
        "mci", setter(lambda d: d["safety"], "form", 'con_meds'),
        safety_triggers(), setup=with_safety,
    ),
    "safety.serious_if": Probe(
        "mci", setter(lambda d: d["safety"], "serious_if", "[ae_severity] = 'severe'"),
        safety_triggers(), setup=with_safety,
    ),
    "safety.report_within_hours": Probe(
        "mci", setter(lambda d: d["safety"], "report_within_hours", 48),
        safety_triggers(), setup=with_safety,
    ),
    "safety.notify[]": Probe(
        "mci", setter(lambda d: d["safety"], "notify", ['sponsor_admin']),
        safety_triggers(), setup=with_safety,
    ),
    "safety.alerts[].id": Probe(
        "mci", setter(lambda d: d["safety"]["alerts"][0], "id", 'other'),
        safety_triggers(), setup=with_safety,
    ),
    "safety.alerts[].form": Probe(
        "mci", setter(lambda d: d["safety"]["alerts"][0], "form", 'adverse_events'),
        safety_triggers(), setup=with_safety,
    ),
    "safety.alerts[].when": Probe(
        "mci", setter(lambda d: d["safety"]["alerts"][0], "when", '[app_ease] <= 0'),
        safety_triggers(), setup=with_safety,
    ),
    "safety.alerts[].notify[]": Probe(
        "mci", setter(lambda d: d["safety"]["alerts"][0], "notify", ['investigator']),
        safety_triggers(), setup=with_safety,
    ),
    "safety.alerts[].escalate_after_hours": Probe(
        "mci", setter(lambda d: d["safety"]["alerts"][0], "escalate_after_hours", 8),
        safety_triggers(), setup=with_safety,
    ),
    "safety.alerts[].escalate_to[]": Probe(
        "mci", setter(lambda d: d["safety"]["alerts"][0], "escalate_to", ['monitor']),
        safety_triggers(), setup=with_safety,
    ),
    # amendments: when a participant already in the trial moves to the activated version
    "amendment.transition": Probe("mci", setter(lambda d: d["amendment"], "transition",
                                                "next_visit"),
                                  setup=lambda d: d.update(amendment={"transition": "immediately"}),
                                  shell_steps=("amend",)),
    # a consent recorded as signed by the participant is refused when a guardian must sign
    "consents[].signer": Probe("mci", setter(lambda d: d["consents"][0], "signer", "guardian"),
                               shell_steps=("consent",)),
}

#: mean_per_day has no per-day minimum: the metric probe drops it too.
ADHERENCE_COMPANION = "device_streams[].adherence.daily_minimum"
#: Adherence keys: evaluated by the device-data service on stored observations, with each
#: protocol variant (see test_adherence_keys_have_an_effect).
ADHERENCE_PROBES: dict[str, Change] = {
    "device_streams[].adherence.metric": both(
        setter(lambda d: d["device_streams"][0]["adherence"], "metric", "mean_per_day"),
        popper(lambda d: d["device_streams"][0]["adherence"], "daily_minimum")),
    "device_streams[].adherence.threshold": setter(
        lambda d: d["device_streams"][0]["adherence"], "threshold", 0.3),
    "device_streams[].adherence.daily_minimum": setter(
        lambda d: d["device_streams"][0]["adherence"], "daily_minimum", 10),
    "device_streams[].adherence.window_start_visit": setter(
        lambda d: d["device_streams"][0]["adherence"], "window_start_visit", "week_4"),
    "device_streams[].adherence.window_end_visit": setter(
        lambda d: d["device_streams"][0]["adherence"], "window_end_visit", "week_4"),
    "device_streams[].adherence.condition": setter(
        lambda d: d["device_streams"][0]["adherence"], "condition", "[moca_total] >= 30"),
    "device_streams[].adherence.defines_per_protocol": setter(
        lambda d: d["device_streams"][0]["adherence"], "defines_per_protocol", False),
}


# ------------------------------------------------------------------ the coverage test


def test_every_schema_key_is_covered_once() -> None:
    leaves = set(schema_leaves())
    sources = {
        "probes": set(PROBES) | set(ADHERENCE_PROBES),
        "descriptive": set(DESCRIPTIVE_KEYS),
        "pending": set(PENDING_OTHER_ISSUES),
    }
    for name, keys in sources.items():
        assert keys <= leaves, f"{name} lists keys the schema does not have: {keys - leaves}"
    covered = set().union(*sources.values())
    assert leaves == covered, f"keys with no effect test, not descriptive: {leaves - covered}"
    names = list(sources)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not sources[a] & sources[b], f"{a} and {b} both list {sources[a] & sources[b]}"
    print(
        f"\nkey-effect coverage: {len(leaves)} schema keys = "
        f"{len(sources['probes'])} with an effect test + {len(sources['descriptive'])} "
        f"descriptive + {len(sources['pending'])} pending other issues"
    )


def _prepared(probe: Probe, key: str) -> tuple[Doc, Doc]:
    base = library_doc(probe.base)
    if probe.setup is not None:
        probe.setup(base)
    changed = copy.deepcopy(base)
    probe.change(changed)
    touched = changed_keys(base, changed)
    assert key in touched, f"the probe for {key} changed {sorted(touched)}"
    unexpected = touched - {key, *probe.also}
    assert not unexpected, f"the probe for {key} also changed {sorted(unexpected)}"
    return base, changed


_OBSERVED: dict[tuple[str, int], str] = {}


def _observe(probe: Probe, doc: Doc) -> str:
    """Return what the probe's observer sees of the document (memoised: bases recur)."""
    protocol, errors = build(doc)
    assert protocol is not None and not errors, errors
    assert probe.observe is not None
    memo = (json.dumps(doc, sort_keys=True, default=str), id(probe.observe))
    if memo not in _OBSERVED:
        _OBSERVED[memo] = json.dumps(probe.observe(protocol), default=str, sort_keys=True)
    return _OBSERVED[memo]


PURE = sorted(k for k, p in PROBES.items() if not p.shell_steps)
SHELL = sorted(k for k, p in PROBES.items() if p.shell_steps)


@pytest.mark.parametrize("key", PURE)
def test_key_has_an_effect(key: str) -> None:
    probe = PROBES[key]
    base, changed = _prepared(probe, key)
    base_protocol, base_errors = build(base)
    assert base_protocol is not None and not base_errors, base_errors
    if probe.refused is not None:
        protocol, errors = build(changed)
        assert protocol is None and any(probe.refused in e for e in errors), errors
        return
    assert _observe(probe, base) != _observe(probe, changed), f"changing {key} changed nothing"


# ------------------------------------------------------------------ shell probes (database)


def _actor(trial_id: int, role: Role, site_id: int | None = None, user_id: int | None = None,
           name: str = "probe") -> Actor:
    return Actor(user_id=user_id, username=name, printed_name=name.title(), via="cli",
                 grants=(Grant(trial_id, site_id, role),))


def _outcome(call: Callable[[], object]) -> object:
    try:
        return ["ok", call()]
    except DomainError as exc:
        return ["refused", exc.status, exc.message]


def _load(doc: Doc, tmp_path: Path) -> Trial:
    path = tmp_path / f"{doc['code']}.yaml"
    path.write_text(dump(doc), encoding="utf-8")
    protocols.load_library_file(db.session, CLI, path)
    return db.session.scalars(select(Trial).where(Trial.code == doc["code"])).one()


def shell_observation(doc: Doc, steps: tuple[str, ...], tmp_path: Path) -> object:
    """Load the protocol as a trial and record what the services do in the named steps."""
    try:
        return _shell_observation(doc, steps, tmp_path)
    finally:
        db.session.remove()  # end any transaction a refused call left open


def _shell_observation(doc: Doc, steps: tuple[str, ...], tmp_path: Path) -> object:
    seen: dict[str, object] = {}
    if "upload" in steps:  # the probed document uploaded to the library trial
        trial = _load(library_doc("mci"), tmp_path)
        sponsor = _actor(trial.id, Role.SPONSOR_ADMIN)
        text = dump(doc)
        seen["upload"] = _outcome(
            lambda: protocols.upload_version(db.session, sponsor, trial, text)[0].version_no
        )
        return seen
    trial = _load(doc, tmp_path)
    trial_id = trial.id
    sites = list(db.session.scalars(select(Site).where(Site.trial_id == trial_id)
                                    .order_by(Site.id)))
    sponsor = _actor(trial_id, Role.SPONSOR_ADMIN)
    investigator = _actor(trial_id, Role.INVESTIGATOR)
    if "sites" in steps:
        seen["sites"] = [(s.code, s.country, s.timezone) for s in sites]
        seen["runtime_site"] = _outcome(lambda: trials.create_site(
            db.session, sponsor, trial, {"code": "ZZ99", "name": "Added later"}).code)
    if "randomize" in steps or "unblind" in steps or "forms" in steps or "ingest" in steps:
        subjects = insert_enrolled_mci_participants(db.session, CLI, trial, sites[:2], 4)
        results = []
        for subject in subjects:
            def randomize(subject: str = subject) -> object:
                allocation, _ = shell.randomize_participant(
                    db.session, investigator, db.session.get(Trial, trial_id), subject
                )
                return [allocation.activation_code.split("-")[0]
                        if allocation.activation_code else None,
                        allocation.randomization_number[0]]
            results.append(_outcome(randomize))
        seen["randomize"] = results
        seen["investigator_sees"] = sorted(
            allocation_schema(investigator, db.session.get(Trial, trial_id)).fields
        )
        blinded = protocols.blinded_roles(db.session, db.session.get(Trial, trial_id))
        seen["roles_seeing_arms"] = sorted(
            role.value
            for role in Role
            if sees_arms(_actor(trial_id, role, sites[0].id, None, "x"), trial_id, blinded)
        )
    trial = db.session.get(Trial, trial_id)
    if "unblind" in steps:
        accounts = {}
        for role in (Role.SPONSOR_ADMIN, Role.MONITOR, Role.AUDITOR, Role.DATA_MANAGER):
            accounts[role] = make_user(role.value.replace("_", ""), role=role.value, trial=trial,
                                       email=f"{role.value}@example.org")
        inv = make_user("inv", role="investigator", trial=trial, site=sites[0],
                        email="inv@example.org")
        subject = subjects[0]
        shell.emergency_unblind(
            db.session, _actor(trial_id, Role.INVESTIGATOR, sites[0].id, inv.user.id, "inv"),
            db.session.get(Trial, trial_id), subject, password=PASSWORD, reason="anaphylaxis",
            category="medical_emergency",
        )
        seen["notified"] = sorted(
            db.session.scalars(select(Notification.recipient_role))  # type: ignore[arg-type]
        )
    if "forms" in steps:
        seen["forms"] = [
            _outcome(lambda visit=visit, form_id=form_id: forms.save_form(
                db.session, investigator, db.session.get(Trial, trial_id), subjects[0], visit,
                form_id, {}, submit=False).record.form_code)
            for visit, form_id in (("unscheduled", "adas_cog"), ("unscheduled", "moca"))
        ]
    if "ingest" in steps:
        coordinator = _actor(trial_id, Role.COORDINATOR)
        records = [
            {"subject": subjects[0], "stream": "training_minutes",
             "time": f"2026-10-0{day}T08:00:00+08:00", "value": value, "unit": "min",
             "source": "probe"}
            for day, value in ((1, 5), (2, 30), (3, 150), (4, 300))
        ]
        result = devices.ingest_observations(
            db.session, coordinator, db.session.get(Trial, trial_id), records,
            now=datetime.datetime(2026, 10, 10, tzinfo=datetime.UTC),
        )
        seen["ingest"] = [result.n_accepted, [(e.index, e.field) for e in result.errors]]
    if "review" in steps:  # a blinded statistician asks for a comparative blinded analysis
        statistician = _actor(trial_id, Role.STATISTICIAN)
        seen["review"] = _outcome(lambda: analyses.request_analysis(
            db.session, statistician, db.session.get(Trial, trial_id), review="comparative",
        ).provenance["review"])
    if "amend" in steps:
        # version 1 loaded; the probed document, labelled 1.1, activated as an amendment
        participant = participants.screen_participant(
            db.session, investigator, db.session.get(Trial, trial_id), sites[0].code
        )
        subject_id = participant.id
        amended = {**doc, "version": f"{doc['version']}-amended"}
        path = tmp_path / "amended.yaml"
        path.write_text(dump(amended), encoding="utf-8")
        protocols.load_library_file(db.session, CLI, path)
        person = db.session.get(Participant, subject_id)
        assert person is not None
        seen["amend"] = [
            participants.version_protocol(db.session, person.protocol_version_id).version,
            participants.waiting_for(db.session, person),
        ]
    if "consent" in steps:
        participant = participants.screen_participant(
            db.session, investigator, db.session.get(Trial, trial_id), sites[0].code
        )
        code = participant.subject_code
        seen["consent"] = _outcome(lambda: participants.record_consent(
            db.session, investigator, db.session.get(Trial, trial_id), code,
            document_id="main_icf", version="1.0", language="en", signer_role="participant",
        ).document_id)
        person = db.session.scalars(
            select(Participant).where(Participant.subject_code == code)
        ).one()
        seen["missing_consents"] = participants.missing_consents(
            db.session, person, participants.current_protocol(db.session, person)
        )
    return seen


@pytest.mark.parametrize("key", SHELL)
def test_key_has_an_effect_in_the_services(
    key: str, app: Flask, tmp_path_factory: pytest.TempPathFactory
) -> None:
    probe = PROBES[key]
    base, changed = _prepared(probe, key)
    for doc in (base, changed):
        protocol, errors = build(doc)
        assert protocol is not None and not errors, errors
    before = shell_observation(base, probe.shell_steps, tmp_path_factory.mktemp("base"))
    _clean(app)
    after = shell_observation(changed, probe.shell_steps, tmp_path_factory.mktemp("changed"))
    assert json.dumps(before, default=str) != json.dumps(after, default=str), (
        f"changing {key} changed nothing the services do: {before}"
    )


def test_adherence_keys_have_an_effect(app: Flask, tmp_path: Path) -> None:
    """One participant's stored training minutes, assessed by the device-data service
    (`services.devices.adherence`) under each protocol variant."""
    base = library_doc("mci")
    trial = _load(base, tmp_path)
    trial_id = trial.id
    sites = list(db.session.scalars(select(Site).where(Site.trial_id == trial_id)
                                    .order_by(Site.id)))
    subject = insert_enrolled_mci_participants(db.session, CLI, trial, sites[:1], 1)[0]
    investigator = _actor(trial_id, Role.INVESTIGATOR)
    shell.randomize_participant(db.session, investigator, db.session.get(Trial, trial_id), subject)
    today = datetime.date.today()
    for visit, days_ago in (("baseline", 30), ("week_4", 10)):
        participants.record_visit_date(
            db.session, investigator, db.session.get(Trial, trial_id), subject, visit,
            today - datetime.timedelta(days=days_ago),
        )
    records = [
        {"subject": subject, "stream": "training_minutes",
         "time": f"{(today - datetime.timedelta(days=d)).isoformat()}T12:00:00+08:00",
         "value": (25 if d % 3 else 12), "unit": "min", "source": "probe"}
        for d in range(1, 31)
    ]
    stored = devices.ingest_observations(
        db.session, _actor(trial_id, Role.COORDINATOR), db.session.get(Trial, trial_id), records
    )
    assert stored.n_accepted == 30, stored.errors

    def assess(doc: Doc) -> object:
        protocol, errors = build(doc)
        assert protocol is not None and not errors, errors
        result = devices.adherence(
            db.session, db.session.get(Trial, trial_id), protocol, today=today
        )[subject]
        return [result.is_adherent, result.meets_per_protocol,
                [(s.value, s.n_days, s.condition_met) for s in result.streams]]

    baseline = assess(base)
    for key, change in ADHERENCE_PROBES.items():
        changed = copy.deepcopy(base)
        change(changed)
        touched = changed_keys(base, changed)
        assert key in touched and touched <= {key, ADHERENCE_COMPANION}, touched
        assert assess(changed) != baseline, f"changing {key} changed nothing"
