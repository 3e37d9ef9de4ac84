"""Medical coding (issue #18): a sponsor dictionary, auto-coding of exact matches, the data
manager's coding queue (API and page, role-checked, audited), and the coded terms in the SDTM AE
export — never the verbatim upper-cased pretending to be coded."""

from __future__ import annotations

import datetime
import io
import re
from pathlib import Path

import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from dtx_trials.extensions import db
from dtx_trials.models import (
    AuditEvent,
    CodedTerm,
    FormRecord,
    Participant,
    Site,
    Trial,
    Visit,
)
from dtx_trials.models.users import Role
from dtx_trials.services import coding, exports, forms, protocols
from dtx_trials.services.access import Actor, Grant
from dtx_trials.services.errors import Conflict, PermissionDenied, ValidationError
from dtx_trials.services.simulation import populate_trial
from tests.helpers import CLI, PASSWORD, fix_randomization_secret, login, make_user

ROOT = Path(__file__).resolve().parents[2]
DICTIONARY = ROOT / "protocols" / "library" / "dictionaries" / "synthetic_ae_dictionary.csv"
TODAY = datetime.date(2026, 11, 2)
CODE = "MYOPIA-DTX-01"  # its simulated terms include two the synthetic dictionary lacks


UNLISTED = ("eye irritation after screen use", "scraped knee")


def _trial(n: int = 16) -> Trial:
    """The myopia demo trial with n simulated participants, plus two AEs whose terms the
    synthetic dictionary lacks (entered through the forms service by the investigator)."""
    protocols.load_library_file(db.session, CLI, ROOT / "protocols" / "library" /
                                "pediatric_myopia.yaml")
    trial = db.session.scalars(select(Trial).where(Trial.code == CODE)).one()
    fix_randomization_secret(trial.id)
    populate_trial(db.session, trial, n_participants=n, seed=21, today=TODAY)
    record, subject, visit = _first_ae(trial)
    for k, term in enumerate(UNLISTED, start=1):
        forms.save_form(db.session, _as(trial, Role.INVESTIGATOR), trial, subject, visit,
                        "adverse_events",
                        {**record.data, "ae_term": term}, submit=True,
                        repeat_index=100 + k, today=TODAY)
    return trial


def _first_ae(trial: Trial) -> tuple[FormRecord, str, str]:
    """The trial's first adverse-event record, its participant's subject code and its visit."""
    return db.session.execute(  # type: ignore[return-value]
        select(FormRecord, Participant.subject_code, Visit.visit_code)
        .join(Participant, Participant.id == FormRecord.participant_id)
        .join(Visit, Visit.id == FormRecord.visit_id)
        .where(Participant.trial_id == trial.id, FormRecord.form_code == "adverse_events")
        .order_by(FormRecord.id)
    ).first()


def _as(trial: Trial, role: Role) -> Actor:
    return Actor(user_id=None, username=role.value, printed_name=role.value, via="cli",
                 grants=(Grant(trial.id, None, role),))


def _ae(trial: Trial) -> pd.DataFrame:
    files, _ = exports.export_trial_files(db.session, _as(trial, Role.UNBLINDED_STATISTICIAN),
                                          trial, ["xpt"])
    return pd.read_sas(io.BytesIO(files["xpt/ae.xpt"]), format="xport", encoding="ascii")


def test_auto_coding_codes_exact_matches_and_the_export_uses_them(app: Flask) -> None:
    trial = _trial()
    manager = _as(trial, Role.DATA_MANAGER)
    before = _ae(trial)
    assert set(before["AEDECOD"]) == {""}  # nothing coded yet: null, not the verbatim

    n = coding.load_dictionary(db.session, manager, trial, name="DTX-SYNTHETIC", version="1.0",
                               text=DICTIONARY.read_text(encoding="utf-8"))
    assert n == 22
    coded = coding.auto_code(db.session, manager, trial)
    queue = coding.coding_queue(db.session, manager, trial)
    verbatims = {v for v in before["AETERM"]}
    dictionary = {row.split(",")[0] for row in DICTIONARY.read_text().splitlines()[1:]}
    assert coded == len({v for v in verbatims if v.casefold() in dictionary})
    assert {i.verbatim for i in queue} == {v for v in verbatims if v.casefold() not in dictionary}
    assert set(UNLISTED) <= {i.verbatim for i in queue}

    after = _ae(trial)
    preferred = {"eye strain": ("Asthenopia", "Eye disorders"),
                 "headache": ("Headache", "Nervous system disorders")}
    for _, row in after.iterrows():
        if row["AETERM"] in preferred:
            assert (row["AEDECOD"], row["AEBODSYS"]) == preferred[row["AETERM"]]
        if row["AETERM"] in {i.verbatim for i in queue}:
            assert row["AEDECOD"] == "" and row["AEBODSYS"] == ""
        assert row["AEDECOD"] != row["AETERM"].upper()
    # every coding decision is in the audit trail, in the same transaction
    audited = db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.trial_id == trial.id, AuditEvent.action == "coding.auto"))
    assert audited == coded == db.session.scalar(select(func.count()).select_from(CodedTerm))

    # the data manager codes the rest by hand (only to a dictionary term)
    with pytest.raises(ValidationError):
        coding.code_term(db.session, manager, trial, kind="ae", verbatim=UNLISTED[0],
                         dictionary_term="no such term")
    with pytest.raises(PermissionDenied):
        coding.code_term(db.session, _as(trial, Role.INVESTIGATOR), trial, kind="ae",
                         verbatim=UNLISTED[0], dictionary_term="eye strain")
    coding.code_term(db.session, manager, trial, kind="ae", verbatim=UNLISTED[0],
                     dictionary_term="eye strain")
    row = _ae(trial)
    assert set(row[row["AETERM"] == UNLISTED[0]]["AEDECOD"]) == {"Asthenopia"}
    assert UNLISTED[0] not in {i.verbatim for i in coding.coding_queue(db.session, manager,
                                                                         trial)}
    with pytest.raises(Conflict):
        coding.code_term(db.session, manager, trial, kind="ae", verbatim=UNLISTED[0],
                         dictionary_term="fall")
    with pytest.raises(Conflict):  # a dictionary version loads once
        coding.load_dictionary(db.session, manager, trial, name="DTX-SYNTHETIC", version="1.0",
                               text=DICTIONARY.read_text(encoding="utf-8"))


def test_a_verbatim_term_longer_than_200_characters_is_refused_not_a_server_error(
    app: Flask, tmp_path: Path
) -> None:
    """A sponsor's AE form without max_length lets a long verbatim through; its coding is a
    422 naming the field on both databases (before, the page's form reached PostgreSQL with a
    210-character key for a 200-character column: a 500), and nothing is written."""
    text = (ROOT / "protocols" / "library" / "pediatric_myopia.yaml").read_text(encoding="utf-8")
    old = "label: {en: Event, zh: 事件}, required: true, max_length: 200,"
    assert old in text
    path = tmp_path / "myopia.yaml"
    path.write_text(text.replace(old, "label: {en: Event, zh: 事件}, required: true,"),
                    encoding="utf-8")
    protocols.load_library_file(db.session, CLI, path)
    trial = db.session.scalars(select(Trial).where(Trial.code == CODE)).one()
    fix_randomization_secret(trial.id)
    populate_trial(db.session, trial, n_participants=8, seed=21, today=TODAY)
    record, subject, visit = _first_ae(trial)
    long_term = "eye strain after " + "reading under poor light " * 8
    assert len(long_term.strip()) > 200
    forms.save_form(db.session, _as(trial, Role.INVESTIGATOR), trial, subject, visit,
                    "adverse_events", {**record.data, "ae_term": long_term}, submit=True,
                    repeat_index=101, today=TODAY)
    manager = _as(trial, Role.DATA_MANAGER)
    coding.load_dictionary(db.session, manager, trial, name="DTX-SYNTHETIC", version="1.0",
                           text=DICTIONARY.read_text(encoding="utf-8"))
    assert long_term.strip() in {i.verbatim for i in coding.coding_queue(db.session, manager,
                                                                         trial)}
    with pytest.raises(ValidationError) as refused:
        coding.code_term(db.session, manager, trial, kind="ae", verbatim=long_term,
                         dictionary_term="eye strain")
    assert "verbatim" in refused.value.errors
    assert db.session.scalar(select(func.count()).select_from(CodedTerm)) == 0


@pytest.mark.parametrize(("text", "where"), [
    ("term,pt\nheadache,Headache\n", "line 1"),
    ("term,preferred_term,body_system\nheadache,Headache\n", "line 2"),
    ("term,preferred_term,body_system\nheadache,Headache,Nervous\nHeadache,X,Y\n",
     "line 3: 'Headache' (first at line 2)"),
    ("term,preferred_term,body_system\n头痛,Headache,Nervous\n", "line 2"),
])
def test_bad_dictionary_file_is_refused_naming_the_line(text: str, where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        coding.parse_dictionary(text)
    assert where in str(caught.value.errors["file"])


def test_coding_api_and_page_for_the_data_manager_only(app: Flask, client: FlaskClient) -> None:
    trial = _trial(8)
    manager = make_user("dm", role="data_manager", trial=trial)
    site = db.session.scalars(select(Site).where(Site.trial_id == trial.id)).first()
    investigator = make_user("inv", role="investigator", trial=trial, site=site)
    monitor = make_user("mon", role="monitor", trial=trial)
    coding.load_dictionary(db.session, _as(trial, Role.DATA_MANAGER), trial,
                           name="DTX-SYNTHETIC", version="1.0",
                           text=DICTIONARY.read_text(encoding="utf-8"))
    login(client, manager)
    auto = client.post(f"/api/v1/trials/{CODE}/coding/auto", headers=manager.headers)
    assert auto.status_code == 200 and auto.get_json()["n_coded"] >= 1
    queue = client.get(f"/api/v1/trials/{CODE}/coding", headers=manager.headers).get_json()
    assert queue and {"kind", "verbatim", "n_records"} <= set(queue[0])

    login(client, investigator)
    assert client.get(f"/api/v1/trials/{CODE}/coding",
                      headers=investigator.headers).status_code == 403
    login(client, monitor)
    assert client.get(f"/api/v1/trials/{CODE}/coding", headers=monitor.headers).status_code == 200
    body = {"kind": "ae", "verbatim": queue[0]["verbatim"], "dictionary_term": "fall"}
    assert client.post(f"/api/v1/trials/{CODE}/coding", json=body,
                       headers=monitor.headers).status_code == 403
    bad = client.post(f"/api/v1/trials/{CODE}/coding", headers=manager.headers,
                      json={**body, "dictionary_term": "nonsense"})
    assert bad.status_code == 422 and "dictionary_term" in bad.get_json()["errors"]
    if len(queue) > 1:
        done = client.post(f"/api/v1/trials/{CODE}/coding", json={**body,
                           "verbatim": queue[1]["verbatim"]}, headers=manager.headers)
        assert done.status_code == 201 and done.get_json()["preferred_term"] == "Fall"
        assert done.get_json()["method"] == "manual"

    # the page: the data manager sees the queue and codes a term with a form post
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    client.post("/login", data={"username": "dm", "password": PASSWORD,
                                "csrf_token": token.group(1)})
    html = client.get(f"/trials/{CODE}/coding").get_data(as_text=True)
    assert queue[0]["verbatim"] in html
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert csrf
    response = client.post(f"/trials/{CODE}/coding", data={
        "csrf_token": csrf.group(1), "kind": "ae", "verbatim": queue[0]["verbatim"],
        "dictionary_term": "fall"})
    assert response.status_code == 302
    html = client.get(f"/trials/{CODE}/coding").get_data(as_text=True)
    assert f"<td>{queue[0]['verbatim']}</td>" not in html
