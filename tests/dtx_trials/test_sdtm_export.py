"""SDTM from the demo data: every exported AE, DM and DS value is what the CRFs hold (issue #18).

Each library protocol is populated through the services (the `dtx demo` path), exported as
SDTM through the export service, read back from the XPT files, and compared value by value
with the stored form records: AE severity, relationship, seriousness, outcome, start and end
dates; DM sex, age, race and ethnicity, RF dates; DS disposition term, code and date. Runs on
SQLite and PostgreSQL (the `app` fixture).
"""

from __future__ import annotations

import datetime
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from flask import Flask
from sqlalchemy import select, update

from analysis.exports.xport import XptError
from dtx_trials.extensions import db
from dtx_trials.models import (
    DeviceObservation,
    FormRecord,
    Participant,
    Site,
    Trial,
    Visit,
)
from dtx_trials.models.users import Role
from dtx_trials.services import exports, forms, protocols
from dtx_trials.services.access import Actor, Grant
from dtx_trials.services.errors import ValidationError
from dtx_trials.services.protocols import active_protocol
from dtx_trials.services.simulation import populate_trial
from tests.helpers import CLI, fix_randomization_secret

LIBRARY = Path(__file__).resolve().parents[2] / "protocols" / "library"
TODAY = datetime.date(2026, 11, 2)


def _load(filename: str) -> Trial:
    protocols.load_library_file(db.session, CLI, LIBRARY / filename)
    text = (LIBRARY / filename).read_text(encoding="utf-8")
    code = text.split("\ncode: ", 1)[1].split("\n", 1)[0].strip()
    trial = db.session.scalars(select(Trial).where(Trial.code == code)).one()
    fix_randomization_secret(trial.id)
    return trial


def _unblinded(trial: Trial) -> Actor:
    return Actor(user_id=None, username="stats", printed_name="Stats", via="cli",
                 grants=(Grant(trial.id, None, Role.UNBLINDED_STATISTICIAN),))


def _read(files: dict[str, bytes], name: str) -> pd.DataFrame:
    frame = pd.read_sas(io.BytesIO(files[f"xpt/{name}.xpt"]), format="xport", encoding="ascii")
    return frame.replace({"": None}).astype(object).where(frame.notna(), None)


def _crf(trial: Trial, form_id: str) -> list[tuple[str, str, FormRecord]]:
    """(subject code, visit code, record) of every submitted record of a form."""
    rows = db.session.execute(
        select(Participant.subject_code, Visit.visit_code, FormRecord)
        .join(Participant, Participant.id == FormRecord.participant_id)
        .outerjoin(Visit, Visit.id == FormRecord.visit_id)
        .where(Participant.trial_id == trial.id, FormRecord.form_code == form_id,
               FormRecord.status != "draft")
    ).all()
    return [(code, visit or "unscheduled", record) for code, visit, record in rows]


def _terms(protocol: Any, domain: str, variable: str) -> dict[str, str]:
    for mapping in protocol.cdisc.domain_maps(domain):
        for var in mapping.variables:
            if var.variable == variable:
                return {t.code: t.value for t in var.terms}
    raise KeyError(variable)


@pytest.fixture
def populated(app: Flask, request: pytest.FixtureRequest) -> tuple[Trial, dict[str, bytes]]:
    trial = _load(request.param)
    populate_trial(db.session, trial, n_participants=24, seed=11, today=TODAY)
    files, blinded = exports.export_trial_files(db.session, _unblinded(trial), trial, ["xpt"])
    assert not blinded
    return trial, files


LIBRARY_FILES = ["cognitive_impairment.yaml", "pediatric_myopia.yaml", "type2_diabetes.yaml"]


@pytest.mark.parametrize("populated", LIBRARY_FILES, indirect=True)
def test_sdtm_ae_dm_ds_values_are_what_the_crfs_hold(
    populated: tuple[Trial, dict[str, bytes]],
) -> None:
    trial, files = populated
    _, protocol = active_protocol(db.session, trial)
    study = trial.code

    # ---- AE: one row per AE record, every mapped value equal to the CRF's
    ae = _read(files, "ae")
    crf_aes = _crf(trial, "adverse_events")
    assert len(ae) == len(crf_aes) > 0
    sev, rel = _terms(protocol, "AE", "AESEV"), _terms(protocol, "AE", "AEREL")
    out, ser = _terms(protocol, "AE", "AEOUT"), _terms(protocol, "AE", "AESER")
    by_spid = {(r["USUBJID"], r["AESPID"]): r for r in ae.to_dict("records")}
    seen_severities = set()
    for code, visit, record in crf_aes:
        row = by_spid[(f"{study}-{code}", f"{visit}-{record.repeat_index}")]
        data = record.data
        assert row["AETERM"] == data["ae_term"]
        assert row["AESEV"] == sev[data["ae_severity"]]
        assert row["AEREL"] == rel[data["ae_related"]]
        assert row["AESER"] == ser[data["ae_serious"]]
        assert row["AESTDTC"] == data["ae_onset_on"]
        end = data.get("ae_resolved_on")
        assert row["AEENDTC"] == (end if isinstance(end, str) else None)
        outcome = data.get("ae_outcome")
        assert row["AEOUT"] == (out[outcome] if outcome else None)
        assert row["AEACN"] == "NOT APPLICABLE"  # the protocol's constant for a DTx
        # not coded (no dictionary loaded): null, never the verbatim dressed up as coded
        assert row["AEDECOD"] is None and row["AEBODSYS"] is None
        seen_severities.add(row["AESEV"])
    assert len(seen_severities) >= 2  # the comparison covers more than one severity
    # AESEQ unique per subject (SDTM-03), AESTDY from RFSTDTC
    assert not ae.duplicated(["USUBJID", "AESEQ"]).any()

    # ---- DM: sex, age, race, ethnicity from the screening form; RF dates from the data
    dm = _read(files, "dm").set_index("USUBJID")
    sex = _terms(protocol, "DM", "SEX")
    race, ethnic = _terms(protocol, "DM", "RACE"), _terms(protocol, "DM", "ETHNIC")
    sex_field = "child_sex" if "child_sex" in {f.id for f in protocol.form("screening").fields} \
        else "sex"
    age_field = "age_years" if sex_field == "child_sex" else "age"
    participants = {
        p.subject_code: p
        for p in db.session.scalars(select(Participant).where(Participant.trial_id == trial.id))
    }
    assert set(dm.index) == {f"{study}-{c}" for c in participants}
    screening = {code: record for code, _, record in _crf(trial, "screening")}
    for code, record in screening.items():
        row = dm.loc[f"{study}-{code}"]
        assert row["SEX"] == sex[record.data[sex_field]]
        assert row["AGE"] == record.data[age_field]
        assert row["RACE"] == (race[record.data["race"]] if "race" in record.data else None)
        assert row["ETHNIC"] == (ethnic[record.data["ethnic"]] if "ethnic" in record.data
                                 else None)
        p = participants[code]
        assert row["RFICDTC"] == (p.consented_at.date().isoformat() if p.consented_at else None)
    # RFXSTDTC/RFXENDTC = first/last day with app use in the device data
    exposure = next(m.stream for m in protocol.cdisc.mappings if m.domain == "EX")
    used: dict[str, list[str]] = defaultdict(list)
    for obs, code in db.session.execute(
        select(DeviceObservation, Participant.subject_code)
        .join(Participant, Participant.id == DeviceObservation.participant_id)
        .where(DeviceObservation.trial_id == trial.id, DeviceObservation.stream == exposure,
               DeviceObservation.value > 0)
    ):
        used[code].append(obs.observed_at.date().isoformat())
    for code in participants:
        row = dm.loc[f"{study}-{code}"]
        assert row["RFXSTDTC"] == (min(used[code]) if used[code] else None)
        assert row["RFXENDTC"] == (max(used[code]) if used[code] else None)
        assert row["RFSTDTC"] == row["RFXSTDTC"]

    # ---- DS: the disposition event is the end-of-study form's status and date
    ds = _read(files, "ds")
    decod = _terms(protocol, "DS", "DSDECOD")
    events = ds[ds["DSCAT"] == "DISPOSITION EVENT"]
    eos = _crf(trial, "end_of_study")
    latest: dict[str, FormRecord] = {}
    for code, _, record in eos:
        if code not in latest or record.data["eos_on"] >= latest[code].data["eos_on"]:
            latest[code] = record
    for code, record in latest.items():
        rows = events[events["USUBJID"] == f"{study}-{code}"]
        assert len(rows) == 1
        row = rows.iloc[0]
        assert row["DSDECOD"] == decod[record.data["eos_status"]]
        assert row["DSSTDTC"] == record.data["eos_on"]
    withdrawn = [c for c, p in participants.items() if p.status == "withdrawn"]
    assert all(c in latest for c in withdrawn)
    assert {"COMPLETED"} <= set(events["DSDECOD"]) or not latest
    # milestones carry their real dates
    for code, p in participants.items():
        consent = ds[(ds["USUBJID"] == f"{study}-{code}")
                     & (ds["DSDECOD"] == "INFORMED CONSENT OBTAINED")]
        if p.consented_at:
            assert list(consent["DSSTDTC"]) == [p.consented_at.date().isoformat()]
    assert not ds.duplicated(["USUBJID", "DSSEQ"]).any()

    # ---- the other domains are there and tie to DM
    names = {n.split("/")[1] for n in files if n.startswith("xpt/") and n.endswith(".xpt")}
    assert {"ts.xpt", "dm.xpt", "ds.xpt", "sv.xpt", "ae.xpt", "ex.xpt", "qs.xpt" if
            study != "T2D-COACH-01" else "lb.xpt"} <= names
    ex = _read(files, "ex")
    assert len(ex) == sum(len(set(v)) for v in used.values())
    sv = _read(files, "sv")
    held = db.session.scalars(
        select(Visit).join(Participant).where(Participant.trial_id == trial.id,
                                              Visit.actual_on.is_not(None),
                                              Visit.is_unscheduled.is_(False))
    ).all()
    assert len(sv) == len(held)


def test_sdtm_oe_carries_refraction_and_axial_length_per_eye(app: Flask) -> None:
    trial = _load("pediatric_myopia.yaml")
    populate_trial(db.session, trial, n_participants=8, seed=3, today=TODAY)
    files, _ = exports.export_trial_files(db.session, _unblinded(trial), trial, ["xpt"])
    oe = _read(files, "oe")
    refraction = _crf(trial, "refraction")
    for code, visit, record in refraction:
        for side, field in (("RIGHT", "se_right"), ("LEFT", "se_left")):
            if field not in record.data:
                continue
            row = oe[(oe["USUBJID"] == f"{trial.code}-{code}") & (oe["OETESTCD"] == "SPHEQUIV")
                     & (oe["OELAT"] == side)]
            assert float(record.data[field]) in set(row["OESTRESN"]), (visit, side)
    assert set(oe["OEORRESU"]) == {"D", "mm"}
    assert set(oe["OEMETHOD"]) == {"AUTOREFRACTION", "OPTICAL BIOMETRY"}


def test_xpt_06_chinese_ae_term_refuses_with_the_participant_and_the_json_route(
    app: Flask,
) -> None:
    trial = _load("cognitive_impairment.yaml")
    populate_trial(db.session, trial, n_participants=8, seed=5, today=TODAY)
    record = db.session.scalars(
        select(FormRecord).join(Participant).where(Participant.trial_id == trial.id,
                                                   FormRecord.form_code == "adverse_events")
    ).first()
    assert record is not None
    record.data = {**record.data, "ae_term": "头晕"}
    db.session.commit()
    code = db.session.get(Participant, record.participant_id).subject_code  # type: ignore[union-attr]
    with pytest.raises(ValidationError) as caught:
        exports.export_trial_files(db.session, _unblinded(trial), trial, ["xpt"])
    message = str(caught.value.errors)
    assert "AE.AETERM" in message and code in message and "Dataset-JSON" in message
    assert isinstance(caught.value.__cause__, XptError)


def _exported(trial: Trial, formats: list[str]) -> dict[str, bytes]:
    files, _ = exports.export_trial_files(db.session, _unblinded(trial), trial, formats)
    return files


def test_sdtm_02_an_unscheduled_visits_forms_are_exported_not_dropped(app: Flask) -> None:
    """A form entered at the participant's unscheduled visit (an adverse event, the protocol's
    unscheduled ADAS-Cog) is in every export: CSV and ODM under the visit ``unscheduled`` (an
    ODM StudyEventDef of Type Unscheduled), SDTM with VISIT UNSCHEDULED. The unscheduled visit
    has no date (one visit row holds all of a participant's unscheduled entries), so its
    findings have no VISITNUM, --DTC or SV record: none is made up."""
    trial = _load("cognitive_impairment.yaml")
    populate_trial(db.session, trial, n_participants=8, seed=3, today=TODAY)
    investigator = Actor(user_id=None, username="inv", printed_name="Inv", via="cli",
                         grants=(Grant(trial.id, None, Role.INVESTIGATOR),))
    ae, subject = db.session.execute(
        select(FormRecord, Participant.subject_code)
        .join(Participant, Participant.id == FormRecord.participant_id)
        .where(Participant.trial_id == trial.id, FormRecord.form_code == "adverse_events")
        .order_by(FormRecord.id)
    ).first()  # type: ignore[misc]
    forms.save_form(db.session, investigator, trial, subject, "unscheduled", "adverse_events",
                    {**ae.data, "ae_term": "fall at home"}, submit=True, today=TODAY)
    adas = {f"adas_q{i + 1:02d}": i % 4 for i in range(13)}
    forms.save_form(db.session, investigator, trial, subject, "unscheduled", "adas_cog", adas,
                    submit=True, today=TODAY)
    study = trial.code

    files = _exported(trial, ["xpt", "csv", "odm"])
    ae_rows = _read(files, "ae")
    unscheduled = ae_rows[ae_rows["AETERM"] == "fall at home"]
    assert list(unscheduled["AESPID"]) == ["unscheduled-1"]
    assert list(unscheduled["USUBJID"]) == [f"{study}-{subject}"]
    assert list(unscheduled["AESTDTC"]) == [ae.data["ae_onset_on"]]  # the form's own date
    qs = _read(files, "qs")
    mine = qs[(qs["USUBJID"] == f"{study}-{subject}") & (qs["VISIT"] == "UNSCHEDULED")]
    assert len(mine) == 13 + 1  # the items and the total
    assert set(mine["VISITNUM"]) == {None} and set(mine["QSDTC"]) == {None}
    assert sorted(mine[mine["QSTESTCD"] != "ACTOT13"]["QSORRES"], key=int) == sorted(
        (str(v) for v in adas.values()), key=int)
    sv = _read(files, "sv")
    assert set(sv["VISIT"]) <= {v.label.en for v in active_protocol(db.session, trial)[1]
                                .schedule.visits}
    long = pd.read_csv(io.BytesIO(files["csv/adverse_events_long.csv"]), dtype=str)
    term = long[(long.iloc[:, 0] == subject) & (long.iloc[:, 5] == "ae_term")]
    assert ("unscheduled", "fall at home") in set(zip(term.iloc[:, 2], term.iloc[:, 6],
                                                       strict=True))
    odm = files["odm/odm.xml"].decode()
    assert 'Type="Unscheduled"' in odm and "fall at home" in odm


def test_sdtm_dm_country_is_the_sites_recorded_country_never_a_guess(app: Flask) -> None:
    """DM.COUNTRY is the ISO 3166-1 alpha-3 code of the site's recorded country (any
    country, not six known ones); a site with none refuses the SDTM export naming the site,
    where CHN was exported before (the CSV export, which has no country, still builds)."""
    trial = _load("cognitive_impairment.yaml")
    populate_trial(db.session, trial, n_participants=8, seed=3, today=TODAY)
    sites = list(db.session.scalars(select(Site).where(Site.trial_id == trial.id)
                                    .order_by(Site.id)))
    sites[0].country = "JP"
    db.session.commit()
    dm = _read(_exported(trial, ["xpt"]), "dm")
    at_first = dm[dm["SITEID"] == sites[0].code]
    assert len(at_first) > 0 and set(at_first["COUNTRY"]) == {"JPN"}
    recorded = {"CN": "CHN", "HK": "HKG"}  # the protocol's other sites
    for site in sites[1:]:
        assert set(dm[dm["SITEID"] == site.code]["COUNTRY"]) <= {recorded[str(site.country)]}

    sites[1].country = None
    db.session.commit()
    with pytest.raises(ValidationError) as refused:
        _exported(trial, ["xpt"])
    assert f"site(s) {sites[1].code} have no ISO 3166-1 country" in str(refused.value.errors)
    assert "csv/subjects.csv" in _exported(trial, ["csv"])

    # a database administrator writes a code the services refuse: refused the same way, never
    # exported as a guess
    db.session.execute(update(Site).where(Site.id == sites[1].id).values(country="ZZ"))
    db.session.commit()
    with pytest.raises(ValidationError) as refused:
        _exported(trial, ["xpt"])
    assert f"site(s) {sites[1].code} have no ISO 3166-1 country" in str(refused.value.errors)


def test_odm_02_a_real_trials_clinical_data_follows_its_metadata(app: Flask) -> None:
    """The ODM of a simulated trial with logs entered at scheduled visits and an entry at the
    unscheduled visit: valid against the ODM 1.3.2 XSD, and every StudyEventData is a
    StudyEventDef whose FormRefs hold each of its FormData (a log is referenced by every event;
    before, an adverse event at week 4 was FormData of an event that did not reference it)."""
    import xml.etree.ElementTree as ET

    import xmlschema
    from odmlib import schema_manager

    trial = _load("cognitive_impairment.yaml")
    populate_trial(db.session, trial, n_participants=8, seed=3, today=TODAY)
    investigator = Actor(user_id=None, username="inv", printed_name="Inv", via="cli",
                         grants=(Grant(trial.id, None, Role.INVESTIGATOR),))
    subject = db.session.scalars(select(Participant.subject_code).where(
        Participant.trial_id == trial.id, Participant.status == "randomized")).first()
    assert subject is not None
    forms.save_form(db.session, investigator, trial, subject, "unscheduled", "adas_cog",
                    {f"adas_q{i + 1:02d}": 1 for i in range(13)}, submit=True, today=TODAY)
    odm = _exported(trial, ["odm"])["odm/odm.xml"]
    schema = xmlschema.XMLSchema(schema_manager.get_schema_path("odm", "1.3.2"))
    errors = list(schema.iter_errors(odm.decode("utf-8")))
    assert errors == [], [f"{e.path}: {e.reason}" for e in errors[:3]]

    ns = {"odm": "http://www.cdisc.org/ns/odm/v1.3"}
    root = ET.fromstring(odm)  # noqa: S314 (our own output)
    refs = {event.attrib["OID"]: {r.attrib["FormOID"] for r in event.iterfind("odm:FormRef", ns)}
            for event in root.iterfind(".//odm:StudyEventDef", ns)}
    kinds = {event.attrib["OID"]: event.attrib["Type"]
             for event in root.iterfind(".//odm:StudyEventDef", ns)}
    seen: set[tuple[str, str]] = set()
    for event in root.iterfind(".//odm:StudyEventData", ns):
        oid = event.attrib["StudyEventOID"]
        for form in event.iterfind("odm:FormData", ns):
            assert form.attrib["FormOID"] in refs[oid], (oid, form.attrib["FormOID"])
            seen.add((kinds[oid], form.attrib["FormOID"]))
    assert ("Unscheduled", "F.ADAS_COG") in {(k, f.upper()) for k, f in seen}
    assert any(k == "Scheduled" and "ADVERSE" in f.upper() for k, f in seen)
