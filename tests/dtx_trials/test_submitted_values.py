"""One rule for a participant's values (`participants.submitted_values`): eligibility, the
randomization's stratum and a form save's cross-visit checks read the same values, and a later
occurrence of a questionnaire's repeating window is not its visit's value (the first is, as
in the analysis datasets). Before, the stratum and the checks took the last occurrence."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import Allocation, FormRecord, Participant, Trial
from dtx_trials.services import protocols
from dtx_trials.services.participants import RecordValues, clinical_values, submitted_values
from tests.dtx_trials.trial_flow import (
    LIBRARY,
    MCI_CODE,
    api,
    enrolled_mci_participant,
    trial_staff,
)
from tests.helpers import CLI

ADAS = {f"adas_q{i + 1:02d}": 1 for i in range(13)}


def test_drafts_and_later_windows_are_no_value_and_every_log_entry_is() -> None:
    records: list[RecordValues] = [
        ("screening", "moca", 1, "submitted", {"moca_total": 20}),
        ("screening", "diary", 1, "signed", {"ease": 2}),
        ("screening", "diary", 2, "submitted", {"ease": 9}),  # a later window
        ("screening", "other", 1, "draft", {"moca_total": 30}),
        (None, "import", 1, "verified", {"age": 70}),
        ("baseline", "conmed", 1, "submitted", {"drug": "a", "dose": 1}),
        ("baseline", "conmed", 2, "locked", {"drug": "b"}),  # a log's second entry
        (None, None, None, None, None),  # an outer join's row without a record
    ]
    values = submitted_values(records, {"conmed"})
    assert values.by_visit == {
        "screening": {"moca_total": 20, "ease": 2},
        "baseline": {"drug": "b", "dose": 1},
    }
    assert values.unattached == {"age": 70}
    assert values.merged == {"moca_total": 20, "ease": 2, "age": 70, "drug": "b", "dose": 1}
    # record order decides: the same records the other way round
    assert submitted_values(records[6:4:-1], {"conmed"}).by_visit == {
        "baseline": {"drug": "a", "dose": 1}
    }


def _load_with_a_daily_questionnaire(tmp_path: Path) -> Trial:
    """The MCI protocol with the app questionnaire at screening, open daily three times, a
    stratification factor on its answer, and an ADAS-Cog field copying it (a cross-visit
    reference)."""
    text = (LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8")
    edits = {
        "      forms: [screening, moca]\n": "      forms: [screening, moca, app_experience]\n",
        "  unscheduled_forms: [adas_cog]\n": (
            "  unscheduled_forms: [adas_cog]\n  epro:\n"
            "    - {form: app_experience, visit: screening, opens: 0, closes: 0, "
            "every_days: 1, times: 3}\n"
        ),
        "  factors:\n": (
            "  factors:\n    - id: ease_band\n      label: {en: App ease, zh: 易用性}\n"
            "      field: app_ease\n      visit: screening\n      levels:\n"
            "        - {code: hard, label: {en: Hard, zh: 难}, when: \"[app_ease] <= 5\"}\n"
            "        - {code: easy, label: {en: Easy, zh: 易}, otherwise: true}\n"
        ),
        "    fields:\n      - {id: adas_q01,": (
            "    fields:\n      - {id: ease_at_screening, type: calculated, label: {en: Ease, "
            "zh: 易用性}, calculation: \"[screening][app_ease]\"}\n      - {id: adas_q01,"
        ),
    }
    for old, new in edits.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "mci.yaml"
    path.write_text(text, encoding="utf-8")
    protocols.load_library_file(db.session, CLI, path)
    return db.session.scalars(select(Trial).where(Trial.code == MCI_CODE)).one()


def _answer(client: FlaskClient, who: Any, subject: str, ease: int, window: int) -> None:
    api(client, who, "PUT", f"/participants/{subject}/visits/screening/forms/app_experience",
        {"values": {"app_ease": ease, "app_problem": "0"}, "submit": True,
         "repeat_index": window}, 200)  # fmt: skip


def test_the_stratum_and_cross_visit_checks_read_a_windows_first_occurrence(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    staff = trial_staff(client, _load_with_a_daily_questionnaire(tmp_path))
    inv = staff["inv"]
    subject = enrolled_mci_participant(client, staff)
    # the screening visit took place two days ago (the site's calendar): the first two daily
    # windows have opened (a later one's answer is refused before it opens)
    two_days_ago = datetime.datetime.now(ZoneInfo("Asia/Shanghai")).date() - datetime.timedelta(2)
    api(client, inv, "POST", f"/participants/{subject}/visits/screening/date",
        {"date": two_days_ago.isoformat()}, 200)
    _answer(client, inv, subject, ease=2, window=1)
    _answer(client, inv, subject, ease=9, window=2)  # the next day's answer: not screening's
    api(client, inv, "POST", f"/participants/{subject}/randomization", {}, 201)
    api(client, inv, "PUT", f"/participants/{subject}/visits/baseline/forms/adas_cog",
        {"values": ADAS, "submit": True}, 200)  # fmt: skip

    participant = db.session.scalars(
        select(Participant).where(Participant.subject_code == subject)
    ).one()
    allocation = db.session.scalars(
        select(Allocation).where(Allocation.participant_id == participant.id)
    ).one()
    assert allocation.factors["ease_band"] == "hard"  # 2, the first window's answer (9: easy)
    adas = db.session.scalars(
        select(FormRecord).where(
            FormRecord.participant_id == participant.id, FormRecord.form_code == "adas_cog"
        )
    ).one()
    assert adas.data["ease_at_screening"] == 2
    # eligibility's values (`clinical_values`) are the same, and both answers are kept
    merged, by_visit = clinical_values(db.session, participant)
    assert merged["app_ease"] == by_visit["screening"]["app_ease"] == 2
    answers = db.session.execute(
        select(FormRecord.repeat_index, FormRecord.data)
        .where(FormRecord.participant_id == participant.id,
               FormRecord.form_code == "app_experience")
        .order_by(FormRecord.repeat_index)
    ).all()  # fmt: skip
    assert [(window, data["app_ease"]) for window, data in answers] == [(1, 2), (2, 9)]
