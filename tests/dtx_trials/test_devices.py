"""Device data: validation per record, idempotency, NDJSON, batch limits, withdrawn
participants, site scoping, speed; adherence over a small known data set."""

from __future__ import annotations

import datetime
import json
import random
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, DeviceObservation, Participant, Visit
from dtx_trials.services import device_batches
from dtx_trials.services.integrity import check_integrity
from tests.dtx_trials.trial_flow import (
    MCI_CODE,
    TrialStaff,
    api,
    enrolled_mci_participant,
    load_trial,
)
from tests.helpers import counted

DEVICE_DATA = f"/api/v1/trials/{MCI_CODE}/device-data"
TODAY = datetime.datetime.now(datetime.UTC).date()


def minutes(subject: str, day: datetime.date, value: float, **overrides: Any) -> dict[str, Any]:
    return {
        "subject": subject,
        "stream": "training_minutes",
        # 08:00 in China is midnight UTC: the same calendar day in both, never in the future
        "time": f"{day.isoformat()}T08:00:00+08:00",
        "value": value,
        "unit": "min",
        "source": "cogtrain-android-2.3",
        **overrides,
    }


def post(client: FlaskClient, staff: TrialStaff, body: Any, who: str = "dm", **kwargs: Any) -> Any:
    if "data" in kwargs:
        return client.post(DEVICE_DATA, headers=staff[who].headers, **kwargs)
    return client.post(DEVICE_DATA, headers=staff[who].headers, json=body)


def n_observations() -> int:
    return db.session.scalar(select(func.count()).select_from(DeviceObservation)) or 0


@pytest.fixture
def staff_and_subject(client: FlaskClient) -> tuple[TrialStaff, str]:
    staff = load_trial(client)
    return staff, enrolled_mci_participant(client, staff)


def test_same_batch_twice_is_all_duplicates(
    client: FlaskClient, staff_and_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = staff_and_subject
    batch = [minutes(subject, TODAY - datetime.timedelta(days=i), 20 + i) for i in range(5)]
    first = post(client, staff, batch)
    assert first.status_code == 200
    assert first.get_json() == {"accepted": 5, "duplicates": 0, "rejected": 0, "errors": []}
    # the same instants written with another offset are the same observations
    shifted = [
        {
            **r,
            "time": datetime.datetime.fromisoformat(r["time"]).astimezone(datetime.UTC).isoformat(),
        }
        for r in batch
    ]
    again = post(client, staff, batch + shifted)
    assert again.get_json() == {"accepted": 0, "duplicates": 10, "rejected": 0, "errors": []}
    assert n_observations() == 5
    events = db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "device.ingest").order_by(AuditEvent.seq)
    ).all()
    assert len(events) == 2  # one per batch, not one per record
    details = {c["field"]: c["new"] for c in events[0].changes}
    batch = details.pop("batch")
    stored = db.session.scalars(select(DeviceObservation.id)).all()
    assert details.pop("ids") == device_batches.id_ranges(stored)
    assert len(details.pop("merkle_root")) == 64  # the stored rows, hashed into the trail
    assert details == {
        "n_records": 5,
        "n_accepted": 5,
        "n_duplicates": 0,
        "n_rejected": 0,
        "sources": ["cogtrain-android-2.3"],
    }
    second = {c["field"]: c["new"] for c in events[1].changes}
    assert second["batch"] != batch and second["ids"] == ""  # all duplicates: nothing stored
    assert check_integrity(db.session).ok


def test_mixed_batch_stores_the_good_records_and_explains_each_bad_one(
    client: FlaskClient, staff_and_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = staff_and_subject
    day = TODAY - datetime.timedelta(days=1)
    future = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).isoformat()
    batch = [
        minutes(subject, day, 30),  # 0 good
        minutes(subject, day, 30, stream="steps"),  # 1 unknown stream
        minutes(subject, day, 30, unit="h"),  # 2 wrong unit
        minutes(subject, day, 241),  # 3 above max
        minutes(subject, day, -1),  # 4 below min
        minutes(subject, day, 30, time="2026-01-01T12:00:00"),  # 5 no offset
        minutes(subject, day, 30, time=future),  # 6 future
        minutes("BJ01-9999", day, 30),  # 7 unknown subject
        minutes(subject, day, "30"),  # 8 value is text
        "not an object",  # 9
        {**minutes(subject, day, 30), "device_id": "abc"},  # 10 unknown field
        {"stream": "training_minutes"},  # 11 missing fields
        minutes(subject, day, 45, source="cogtrain-ios-2.3"),  # 12 good (other source)
        minutes(subject, day, True),  # 13 boolean is not a number
        minutes(subject, day, 1e300),  # 14 finite, far above the stream's maximum
    ]
    response = post(client, staff, batch)
    assert response.status_code == 200
    body = response.get_json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 0, 13)
    by_index: dict[int, set[str]] = {}
    for error in body["errors"]:
        by_index.setdefault(error["index"], set()).add(error["field"])
        assert error["message"]
    assert by_index == {
        1: {"stream"},
        2: {"unit"},
        3: {"value"},
        4: {"value"},
        5: {"time"},
        6: {"time"},
        7: {"subject"},
        8: {"value"},
        9: {"record"},
        10: {"device_id"},
        11: {"subject", "time", "value", "unit", "source"},
        13: {"value"},
        14: {"value"},
    }
    assert next(e for e in body["errors"] if e["index"] == 7)["subject"] == "BJ01-9999"
    # A number no column can hold is refused at the edge, with the whole batch (edge.py).
    beyond = post(client, staff, [minutes(subject, day, 30), minutes(subject, day, 10**400)])
    assert beyond.status_code == 422
    assert "out of range" in beyond.get_json()["errors"]["json"]["1"]["value"][0]
    stored = db.session.scalars(select(DeviceObservation).order_by(DeviceObservation.value)).all()
    assert [(o.value, o.source) for o in stored] == [
        (30.0, "cogtrain-android-2.3"),
        (45.0, "cogtrain-ios-2.3"),
    ]
    assert stored[0].observed_at == datetime.datetime.combine(
        day, datetime.time(0, 0), tzinfo=datetime.UTC
    )


def test_ndjson_with_blank_and_broken_lines(
    client: FlaskClient, staff_and_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = staff_and_subject
    lines = [
        json.dumps(minutes(subject, TODAY - datetime.timedelta(days=2), 25)),
        "",
        "{not json",
        json.dumps(minutes(subject, TODAY - datetime.timedelta(days=3), 25)),
    ]
    response = post(
        client,
        staff,
        None,
        data="\n".join(lines) + "\n",
        content_type="application/x-ndjson",
    )
    body = response.get_json()
    assert response.status_code == 200
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert body["errors"] == [
        {"index": 1, "subject": None, "field": "record", "message": "must be a JSON object"}
    ]


def test_batches_over_the_limit_and_bad_bodies(
    client: FlaskClient, staff_and_subject: tuple[TrialStaff, str]
) -> None:
    staff, _ = staff_and_subject
    assert post(client, staff, [{}] * 50_001).status_code == 413
    ndjson = post(client, staff, None, data="{}\n" * 50_001, content_type="application/x-ndjson")
    assert ndjson.status_code == 413
    assert post(client, staff, {"subject": "x"}).status_code == 422
    assert post(client, staff, None, data="[1,", content_type="application/json").status_code == 400
    assert post(client, staff, None, data="a,b", content_type="text/csv").status_code == 415
    deep = "[" * 100_000 + "]" * 100_000
    assert post(client, staff, None, data=deep, content_type="application/json").status_code == 422
    assert n_observations() == 0


def test_withdrawn_participants_get_no_new_data(
    client: FlaskClient, staff_and_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = staff_and_subject
    api(
        client,
        staff["inv"],
        "POST",
        f"/participants/{subject}/withdrawal",
        {"reason": "moved"},
        200,
    )
    body = post(client, staff, [minutes(subject, TODAY, 30)]).get_json()
    assert body["accepted"] == 0 and body["rejected"] == 1
    assert body["errors"][0]["field"] == "subject" and "withdrawn" in body["errors"][0]["message"]


def test_who_may_send_data(client: FlaskClient, staff_and_subject: tuple[TrialStaff, str]) -> None:
    staff, subject = staff_and_subject
    record = [minutes(subject, TODAY - datetime.timedelta(days=1), 30)]
    assert post(client, staff, record, who="stat").status_code == 403
    assert post(client, staff, record, who="monitor").status_code == 403
    assert client.post(DEVICE_DATA, json=record).status_code == 401
    # a coordinator sends data for their own site's participants only
    assert post(client, staff, record, who="coord").get_json()["accepted"] == 1
    other_site = staff.sites[list(staff.sites)[1]]
    participant = db.session.scalars(select(Participant)).one()
    participant.site_id = other_site.id
    db.session.commit()
    late = [minutes(subject, TODAY - datetime.timedelta(days=2), 30)]
    assert post(client, staff, late, who="coord").get_json()["errors"][0]["field"] == "subject"


def test_fifty_thousand_records_in_one_batch_are_all_stored(
    client: FlaskClient, staff_and_subject: tuple[TrialStaff, str], backend: str
) -> None:
    staff, subject = staff_and_subject
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=60)
    batch = [
        {
            "subject": subject,
            "stream": "training_minutes",
            "time": (start + datetime.timedelta(minutes=i)).isoformat(),
            "value": i % 200,
            "unit": "min",
            "source": "bulk",
        }
        for i in range(50_000)
    ]
    # one request, every record stored (its speed is a benchmark: bench/device_ingest.py)
    response = post(client, staff, batch)
    assert response.status_code == 200
    assert response.get_json()["accepted"] == 50_000
    assert n_observations() == 50_000


@pytest.mark.usefixtures("cached_tokens")  # its pages' statement counts are compared
def test_adherence_on_a_known_data_set(client: FlaskClient) -> None:
    staff = load_trial(client)
    good, poor, unrandomized = (enrolled_mci_participant(client, staff) for _ in range(3))
    for subject in (good, poor):
        api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    # baseline 12 days ago and week 24 three days ago: a 10-day window (visit dates set as if
    # the visits had taken place)
    window_start = TODAY - datetime.timedelta(days=12)
    for subject in (good, poor):
        participant = db.session.scalars(
            select(Participant).where(Participant.subject_code == subject)
        ).one()
        for code, day in (
            ("baseline", window_start),
            ("week_24", TODAY - datetime.timedelta(days=3)),
        ):
            visit = db.session.scalars(
                select(Visit).where(
                    Visit.participant_id == participant.id, Visit.visit_code == code
                )
            ).one()
            visit.actual_on = day
    db.session.commit()
    batch = []
    for i in range(7):  # 7 of 10 days reach 20 minutes, one in two sessions
        day = window_start + datetime.timedelta(days=i)
        if i == 0:
            batch += [minutes(good, day, 12), minutes(good, day, 8, time=f"{day}T20:00:00+08:00")]
        else:
            batch.append(minutes(good, day, 25))
    batch.append(minutes(good, TODAY - datetime.timedelta(days=1), 100))  # after the window
    batch.append(minutes(good, window_start - datetime.timedelta(days=1), 100))  # before it
    for i in range(6):
        batch.append(minutes(poor, window_start + datetime.timedelta(days=i), 30))
    batch.append(minutes(poor, window_start + datetime.timedelta(days=7), 19))  # under 20 min
    assert post(client, staff, batch).get_json()["rejected"] == 0
    response = client.get(f"/api/v1/trials/{MCI_CODE}/adherence", headers=staff["dm"].headers)
    assert response.status_code == 200
    results = {r["subject_code"]: r for r in response.get_json()}
    assert set(results) == {good, poor}  # no window start without randomization or baseline
    assert unrandomized not in results
    good_stream = results[good]["streams"][0]
    assert good_stream["stream"] == "training_minutes"
    assert good_stream["value"] == pytest.approx(0.7) and good_stream["threshold"] == 0.7
    assert (good_stream["n_days"], good_stream["n_days_meeting_minimum"]) == (10, 7)
    assert results[good]["adherent"] and results[good]["per_protocol"]
    assert results[poor]["streams"][0]["value"] == pytest.approx(0.6)
    assert not results[poor]["adherent"]
    assert "arm" not in response.get_data(as_text=True)
    # a page at a time, by subject code, with a fixed number of statements
    pages = []
    for page in (1, 2):
        with counted() as statements:
            answer = client.get(f"/api/v1/trials/{MCI_CODE}/adherence?page={page}&per_page=1",
                                headers=staff["dm"].headers)  # fmt: skip
        assert answer.status_code == 200 and answer.headers["X-Total-Count"] == "2"
        pages.append(([r["subject_code"] for r in answer.get_json()], len(statements)))
    assert [subjects for subjects, _ in pages] == [[s] for s in sorted((good, poor))]
    with counted() as statements:
        assert client.get(f"/api/v1/trials/{MCI_CODE}/adherence?per_page=2",
                          headers=staff["dm"].headers).status_code == 200  # fmt: skip
    assert pages[0][1] == pages[1][1] == len(statements)
    # other sites see none of these participants; roles without participant access see nothing
    other = client.get(f"/api/v1/trials/{MCI_CODE}/adherence", headers=staff["inv2"].headers)
    assert other.status_code == 200 and other.get_json() == []
    stat = client.get(f"/api/v1/trials/{MCI_CODE}/adherence", headers=staff["stat"].headers)
    assert stat.status_code == 403


def test_random_json_never_fails_the_server(
    client: FlaskClient, staff_and_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = staff_and_subject
    leaves = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20)
    )
    documents = st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
    record_like = st.fixed_dictionaries(
        {
            "subject": st.sampled_from([subject, "BJ01-0099"]) | leaves,
            "stream": st.sampled_from(["training_minutes", "x"]) | leaves,
            "time": st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()) | leaves,
            "value": leaves,
            "unit": st.sampled_from(["min", "h"]) | leaves,
            "source": leaves,
        }
    )

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
    @given(documents | st.lists(record_like | documents, max_size=5))
    def send(body: Any) -> None:
        response = post(client, staff, body)
        assert response.status_code < 500, response.get_data(as_text=True)[:500]

    send()


def test_default_window_and_condition_over_form_data(client: FlaskClient) -> None:
    from dataclasses import replace
    from zoneinfo import ZoneInfo

    from dtx_trials.services import devices
    from dtx_trials.services.protocols import active_protocol

    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)  # MoCA total 21 on the screening form
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    record = {**minutes(subject, TODAY, 25), "time": now.isoformat()}
    assert post(client, staff, [record]).get_json()["accepted"] == 1
    _, protocol = active_protocol(db.session, staff.trial)
    stream = protocol.device_streams[0]
    assert stream.adherence is not None
    local_today = now.astimezone(ZoneInfo("Asia/Shanghai")).date()

    def with_rule(condition: str) -> Any:
        rule = replace(
            stream.adherence, window_start_visit=None, window_end_visit=None, condition=condition
        )
        return replace(protocol, device_streams=(replace(stream, adherence=rule),))

    met = devices.adherence(
        db.session, staff.trial, with_rule("[moca_total] >= 18"), today=local_today
    )[subject]
    result = met.streams[0]
    assert (result.window_start_on, result.window_end_on) == (local_today, local_today)
    assert result.value == 1.0 and result.condition_met is True and met.is_adherent
    unmet = devices.adherence(
        db.session, staff.trial, with_rule("[moca_total] > 25"), today=local_today
    )[subject]
    assert unmet.streams[0].condition_met is False and not unmet.is_adherent


def test_a_resent_batch_with_new_readings_stores_only_the_new_ones(
    client: FlaskClient, staff_and_subject: tuple[TrialStaff, str]
) -> None:
    """A batch that repeats stored readings (PostgreSQL: the direct COPY fails on the unique
    key and the batch goes through the staging table) stores exactly its new readings, the
    first of a reading repeated within the batch, and the audit event covers those rows."""
    staff, subject = staff_and_subject
    days = [TODAY - datetime.timedelta(days=d) for d in range(1, 6)]
    first = post(client, staff, [minutes(subject, day, 10) for day in days[:3]]).get_json()
    assert (first["accepted"], first["duplicates"]) == (3, 0)
    second = [
        minutes(subject, days[0], 99),  # stored already (another value: still the same reading)
        minutes(subject, days[3], 20),  # new
        minutes(subject, days[3], 21),  # the same reading again within the batch
        minutes(subject, days[2], 10),  # stored already
        minutes(subject, days[4], 30, source=" cogtrain-android-2.3 "),  # new (source trimmed)
    ]
    assert post(client, staff, second).get_json() == {
        "accepted": 2, "duplicates": 3, "rejected": 0, "errors": []
    }  # fmt: skip
    stored = db.session.scalars(select(DeviceObservation).order_by(DeviceObservation.id)).all()
    assert [(o.observed_at.date(), o.value) for o in stored] == [
        (days[0], 10.0), (days[1], 10.0), (days[2], 10.0), (days[3], 20.0), (days[4], 30.0)
    ]  # fmt: skip
    event = db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "device.ingest").order_by(AuditEvent.seq)
    ).all()[-1]
    details = {c["field"]: c["new"] for c in event.changes}
    assert details["ids"] == device_batches.id_ranges(o.id for o in stored[3:])
    assert (details["n_accepted"], details["n_duplicates"]) == (2, 3)
    assert check_integrity(db.session).ok


def test_batch_sealer_writes_what_the_verifier_recomputes(app: Any) -> None:
    """The seals and leaves the ingest formats per series are `column_tags` and `leaf`."""
    texts = st.text(
        alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12
    )

    @settings(max_examples=200, deadline=None)
    @given(
        st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1), texts, texts, texts,
        st.datetimes(datetime.datetime(1900, 1, 1), datetime.datetime(2199, 12, 31)),
        st.floats(allow_nan=False, allow_infinity=False), st.integers(1, 2**31 - 1),
    )  # fmt: skip
    def same(
        trial_id: int, participant_id: int, stream: str, unit: str, source: str,
        observed_at: datetime.datetime, value: float, row_id: int,
    ) -> None:  # fmt: skip
        received_at = datetime.datetime(2026, 12, 5, 9, 30, 1, 5, tzinfo=datetime.UTC)
        sealer = device_batches.BatchSealer(trial_id, received_at, "b" * 32)
        series = sealer.series(participant_id, stream, unit, source)
        seal, leaf = sealer.seal_and_leaf(
            row_id, series, observed_at.isoformat(timespec="microseconds"), repr(value)
        )
        row = {
            "id": row_id, "trial_id": trial_id, "participant_id": participant_id,
            "stream": stream, "observed_at": observed_at.replace(tzinfo=datetime.UTC),
            "value": value, "unit": unit, "source": source, "received_at": received_at,
            "batch_id": "b" * 32,
        }  # fmt: skip
        assert seal == device_batches.column_tags(row)
        assert leaf == device_batches.leaf({**row, "seal": seal})

    with app.app_context():
        same()


def test_known_series_shortcut_accepts_and_rejects_as_every_rule_does(
    client: FlaskClient, staff_and_subject: tuple[TrialStaff, str]
) -> None:
    """A record whose subject, stream, unit and source repeat an accepted record's is checked
    for its time and value only; the outcome is that of checking it against every rule."""
    from dtx_trials.services import devices
    from dtx_trials.services.access import Actor, Grant
    from dtx_trials.services.trials import get_trial

    _, subject = staff_and_subject
    now = datetime.datetime.now(datetime.UTC)
    # mostly good records, so that series repeat and the shortcut meets bad times and values
    rng = random.Random(21)
    arabic = str.maketrans("0123456789", "".join(map(chr, range(0x660, 0x66A))))  # digits

    def pick(good: list[Any], bad: list[Any]) -> Any:
        return rng.choice(good) if rng.random() < 0.8 else rng.choice(bad)

    def record() -> dict[str, Any]:
        offset = datetime.timezone(datetime.timedelta(minutes=rng.randrange(-14 * 60, 14 * 60)))
        moment = datetime.datetime(2026, 1, 1, tzinfo=offset) + datetime.timedelta(
            seconds=rng.randrange(10**7), microseconds=rng.randrange(10**6)
        )
        utc = moment.astimezone(datetime.UTC)
        fields: dict[str, Any] = {
            "subject": pick([subject], [f" {subject}", "BJ01-0099", 7]),
            "stream": pick(["training_minutes"], ["training_minutes ", "steps", None]),
            "time": pick([moment.isoformat(), utc.isoformat(),
                          utc.replace(microsecond=0).isoformat(),
                          utc.isoformat().replace("+00:00", "Z"),
                          utc.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
                          utc.strftime("%Y-%m-%dt%H:%M:%S+00:00"),
                          utc.strftime("%Y-%m-%d %H:%M:%S+00:00"),
                          utc.strftime("%G-W%V-%uT%H:%M:%S+00:00"),
                          utc.strftime("%Y-%m-%dT%H:%M:%S,%f+00:00"),
                          utc.strftime("%Y-%m-%dT%H:%M:%S.%f-00:00"),
                          utc.strftime("%Y-%m-%dT%H:%M:%S.%f").translate(arabic) + "+00:00"], [
                (now + datetime.timedelta(minutes=4)).isoformat(),
                (now + datetime.timedelta(minutes=6)).isoformat(), "2026-01-01T12:00:00",
                "yesterday", "0001-01-01T00:00:00+14:00", "2200-01-01T00:00:00+00:00", 5,
                "1899-12-31T23:59:59-05:00", "1900-01-01T01:00:00+05:00"]),
            "value": pick([rng.randint(0, 240), rng.uniform(0, 240)], [
                -1, 241, 240.0000001, -0.0, 1e300, True, None, "30", 10**400, float("inf")]),
            "unit": pick(["min"], ["h", " min", ""]),
            "source": pick(["a", "b"], [" a", "", "x" * 61]),
        }  # fmt: skip
        if rng.random() < 0.05:
            fields["extra"] = 1
        return fields

    cli = Actor(user_id=None, username="cli", printed_name="cli", via="cli", is_superuser=True)
    trial = get_trial(db.session, cli, MCI_CODE)
    actor = Actor(user_id=None, username="dm", printed_name="DM",
                  grants=(Grant(trial.id, None, "data_manager"),))  # fmt: skip

    def outcome(use_shortcut: bool, batch: list[Any]) -> Any:
        sealer = device_batches.BatchSealer(trial.id, now, "b" * 32)
        checker = devices._BatchChecker(db.session, actor, trial, now, sealer, "r", "b" * 32)
        check = checker.check if use_shortcut else checker._problems
        accepted = [check(i, r) for i, r in enumerate(batch)]
        return (
            [None if a is None else (a[0].participant_id, a[0].stream.id, a[0].unit,
                                     a[0].source, a[1], a[2]) for a in accepted],
            checker.errors, checker.n_rejected,
        )  # fmt: skip

    class EveryRule(devices._BatchChecker):
        """The reference: every record checked against every rule, no shortcut."""

        @property
        def known(self) -> dict[Any, Any]:
            return {}

        def check(self, index: int, record: object) -> Any:
            return self._problems(index, record)

    def rows(checker_class: Any, batch: list[Any]) -> Any:
        """What the COPY ingest writes for a batch: the text, ids, leaves and errors."""
        sealer = device_batches.BatchSealer(trial.id, now, "b" * 32)
        checker = checker_class(db.session, actor, trial, now, sealer, "r", "b" * 32)
        sent: list[bytes] = []
        ids: list[int] = []
        leaves: list[bytes] = []
        n = devices._write_rows(sent.append, batch, checker, sealer,
                                list(range(100, 100 + len(batch))), [], ids, leaves)
        return n, b"".join(sent), ids, leaves, checker.errors, checker.n_rejected

    n_accepted = 0
    for _ in range(10):
        batch = [record() for _ in range(200)]
        checked = outcome(False, batch)
        assert outcome(True, batch) == checked
        n_accepted += sum(a is not None for a in checked[0])
        # and the COPY writer's own loop: readings repeated as sent and at another offset
        again = rng.sample(batch, 20)
        for r in rng.sample(batch, 20):
            try:
                moved = datetime.datetime.fromisoformat(r["time"]).astimezone(
                    datetime.timezone(datetime.timedelta(hours=3)))
            except (TypeError, ValueError, OverflowError):
                continue
            again.append({**r, "time": moved.isoformat()})
        written = rows(devices._BatchChecker, batch + again)
        assert written == rows(EveryRule, batch + again)
        assert written[0] > len(written[2])  # repeats counted, written once
    assert n_accepted > 200  # and most of them took the shortcut
    db.session.rollback()
