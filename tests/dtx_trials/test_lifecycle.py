"""Participant lifecycle, forms, signatures, queries, randomization and blinding via the API."""

from __future__ import annotations

import json

from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import Allocation, Participant, Signature
from dtx_trials.services import audit
from tests.dtx_trials.trial_flow import (
    MCI_SCREENING,
    api,
    consented_mci_participant,
    enrolled_mci_participant,
    load_trial,
    moca,
)
from tests.helpers import PASSWORD


def test_screen_to_randomize_blinded_receipt(client: FlaskClient) -> None:
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    receipt = api(
        client,
        staff["inv"],
        "POST",
        f"/participants/{subject}/randomization",
        {"request_id": "req-1"},
        201,
    )
    assert receipt["seq_no"] == 1 and receipt["randomization_number"] == "R00001"
    assert receipt["activation_code"].startswith("MCI-")
    assert "arm_code" not in receipt and "evidence" not in receipt
    # a retry with the same request id returns the same allocation; another attempt is a 409
    again = api(
        client,
        staff["inv"],
        "POST",
        f"/participants/{subject}/randomization",
        {"request_id": "req-1"},
        200,
    )
    assert again == receipt
    conflict = api(
        client,
        staff["inv"],
        "POST",
        f"/participants/{subject}/randomization",
        {"request_id": "req-2"},
        409,
    )
    assert conflict["randomization_number"] == "R00001"
    # the unblinded statistician sees the arm and the evidence; visits are planned
    unblinded = api(client, staff["unblinded"], "GET", "/allocations", None, 200)
    assert unblinded[0]["arm_code"] in ("cogtrain", "sham")
    assert unblinded[0]["stratum_key"] == "site=BJ01|moca_band=moca_18_21"
    assert unblinded[0]["evidence"]["block_size"] in (4, 6)
    visits = api(client, staff["inv"], "GET", f"/participants/{subject}/visits", None, 200)
    assert {v["visit_code"] for v in visits} >= {"baseline", "week_4", "week_12", "week_24"}
    assert audit.verify(db.session).ok


def test_blinded_roles_never_receive_an_arm(client: FlaskClient) -> None:
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    arm = db.session.scalars(select(Allocation.arm_code)).one()
    blinded = ["inv", "coord", "monitor", "dm", "stat", "sponsor", "auditor"]
    paths = [
        f"/participants/{subject}/randomization",
        f"/participants/{subject}",
        "/participants",
        "/audit?per_page=500",
        f"/participants/{subject}/forms",
        "/queries",
        "/unblindings",
    ]
    for who in blinded:
        for path in paths:
            response = client.get(
                f"/api/v1/trials/MCI-COGTRAIN-01{path}", headers=staff[who].headers
            )
            text = response.get_data(as_text=True)
            for term in (f'"{arm}"', "Adaptive cognitive training", "Sham training"):
                assert term not in text, (who, path, term)
        assert (
            client.get(
                "/api/v1/trials/MCI-COGTRAIN-01/allocations", headers=staff[who].headers
            ).status_code
            == 403
        )


def test_site_isolation_404_for_other_site(client: FlaskClient) -> None:
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    other = staff["inv2"]
    for method, path in (
        ("GET", f"/participants/{subject}"),
        ("GET", f"/participants/{subject}/identifiers"),
        ("POST", f"/participants/{subject}/randomization"),
        ("PUT", f"/participants/{subject}/visits/baseline/forms/adas_cog"),
    ):
        body = {"values": {}} if method == "PUT" else ({} if method == "POST" else None)
        api(client, other, method, path, body, 404)
    listed = api(client, other, "GET", "/participants", None, 200)
    assert subject not in [p["subject_code"] for p in listed]
    identifiers = api(
        client, staff["inv"], "GET", f"/participants/{subject}/identifiers", None, 200
    )
    assert identifiers["phone"] == "13900001111"
    api(client, staff["monitor"], "GET", f"/participants/{subject}/identifiers", None, 403)


def test_failed_criterion_is_shown_and_screen_fails(client: FlaskClient) -> None:
    staff = load_trial(client)
    who = staff["inv"]
    subject = consented_mci_participant(client, staff)
    api(
        client,
        who,
        "PUT",
        f"/participants/{subject}/visits/screening/forms/screening",
        {"values": {**MCI_SCREENING, "gds_total": 12}, "submit": True},
        200,
    )
    api(
        client,
        who,
        "PUT",
        f"/participants/{subject}/visits/screening/forms/moca",
        {"values": moca(20), "submit": True},
        200,
    )
    result = api(client, who, "POST", f"/participants/{subject}/eligibility", None, 200)
    assert result["eligible"] is False
    assert [c["id"] for c in result["failed"]] == ["exc_depression"]
    assert result["failed"][0]["text"] == "GDS-15 above 9"
    status = api(client, who, "GET", f"/participants/{subject}", None, 200)["status"]
    assert status == "screen_failed"
    api(client, who, "POST", f"/participants/{subject}/enrollment", None, 409)


def test_sequencing_errors_are_409(client: FlaskClient) -> None:
    staff = load_trial(client)
    who = staff["inv"]
    subject = api(client, who, "POST", "/participants", {"site": "BJ01"}, 201)["subject_code"]
    api(client, who, "POST", f"/participants/{subject}/randomization", {}, 409)
    api(client, who, "POST", f"/participants/{subject}/enrollment", None, 409)
    api(client, who, "POST", f"/participants/{subject}/eligibility", None, 409)


def test_form_validation_branching_and_edit_checks(client: FlaskClient) -> None:
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    who = staff["inv"]
    bad = api(
        client,
        who,
        "PUT",
        f"/participants/{subject}/visits/screening/forms/moca",
        {
            "values": {"moca_raw": 40, "moca_edu_point": "1"},
            "submit": True,
            "reason": "typo",
        },
        422,
    )
    assert "moca_raw" in bad["errors"]["values"]
    record_before = api(client, who, "GET", f"/participants/{subject}/forms", None, 200)
    moca_record = next(r for r in record_before if r["form_code"] == "moca")
    assert moca_record["data"]["moca_raw"] == 20  # nothing half-written


def test_reason_for_change_concurrency_signature_void(client: FlaskClient) -> None:
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    who = staff["inv"]
    path = f"/participants/{subject}/visits/screening/forms/moca"
    records = api(client, who, "GET", f"/participants/{subject}/forms", None, 200)
    record = next(r for r in records if r["form_code"] == "moca")
    # changing submitted data without a reason is refused
    api(
        client,
        who,
        "PUT",
        path,
        {"values": moca(21), "submit": True, "expected_version": record["version"]},
        422,
    )
    saved = api(
        client,
        who,
        "PUT",
        path,
        {
            "values": moca(21),
            "submit": True,
            "expected_version": record["version"],
            "reason": "transcription error",
        },
        200,
    )
    version = saved["record"]["version"]
    assert version == record["version"] + 1
    # a stale version gets 409 with the current version
    stale = api(
        client,
        who,
        "PUT",
        path,
        {"values": moca(22), "submit": True, "expected_version": record["version"], "reason": "x"},
        409,
    )
    assert stale["current_version"] == version
    # sign (wrong password refused), then a change voids the signature
    rid = saved["record"]["id"]
    signing = {"password": PASSWORD, "expected_version": version}
    api(client, who, "POST", f"/records/{rid}/sign", {**signing, "password": "wrong-pass!"}, 403)
    api(client, staff["coord"], "POST", f"/records/{rid}/sign", signing, 403)
    api(client, who, "POST", f"/records/{rid}/sign", {"password": PASSWORD}, 422)
    signature = api(
        client,
        who,
        "POST",
        f"/records/{rid}/sign",
        {**signing, "meaning": "responsibility"},
        201,
    )
    assert signature["printed_name"] == "Inv" and signature["status"] == "valid"
    assert len(signature["content_sha256"]) == 64
    api(
        client,
        who,
        "PUT",
        path,
        {"values": moca(22), "submit": True, "expected_version": version + 1, "reason": "rescored"},
        200,
    )
    detail = api(client, who, "GET", f"/records/{rid}", None, 200)
    assert detail["signatures"][0]["status"] == "invalidated"
    assert detail["status"] == "submitted"
    row = db.session.get(Signature, signature["id"])
    assert row is not None and row.invalidated_reason == "data changed after signing"
    assert audit.verify(db.session).ok


def test_a_signature_binds_to_the_version_and_content_the_signer_saw(
    client: FlaskClient,
) -> None:
    """Issue #14: the investigator views version 1; a coordinator saves version 2 in between;
    signing "what I saw" is a 409, and so is a content hash that is not the record's."""
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    path = f"/participants/{subject}/visits/screening/forms/moca"
    record = api(client, staff["inv"], "GET", f"/participants/{subject}/forms")[1]
    seen = api(client, staff["inv"], "GET", f"/records/{record['id']}")
    assert len(seen["content_sha256"]) == 64
    api(
        client,
        staff["coord"],
        "PUT",
        path,
        {"values": moca(24), "submit": True, "expected_version": seen["version"],
         "reason": "rescored"},
        200,
    )
    signing = {"password": PASSWORD, "expected_version": seen["version"]}
    stale = api(client, staff["inv"], "POST", f"/records/{seen['id']}/sign", signing, 409)
    assert stale["current_version"] == seen["version"] + 1
    now = api(client, staff["inv"], "GET", f"/records/{seen['id']}")
    wrong_hash = {**signing, "expected_version": now["version"], "content_sha256": "0" * 64}
    api(client, staff["inv"], "POST", f"/records/{seen['id']}/sign", wrong_hash, 409)
    assert not api(client, staff["inv"], "GET", f"/records/{seen['id']}")["signatures"]
    good = {**wrong_hash, "content_sha256": now["content_sha256"]}
    signature = api(client, staff["inv"], "POST", f"/records/{seen['id']}/sign", good, 201)
    assert signature["content_sha256"] == now["content_sha256"]
    assert signature["record_version"] == now["version"]


def test_queries_sdv_and_lock(client: FlaskClient) -> None:
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    records = api(client, staff["inv"], "GET", f"/participants/{subject}/forms", None, 200)
    rid = next(r["id"] for r in records if r["form_code"] == "moca")
    query = api(
        client,
        staff["monitor"],
        "POST",
        f"/records/{rid}/queries",
        {"field": "moca_raw", "text": "Please confirm the raw score"},
        201,
    )
    api(
        client,
        staff["inv"],
        "POST",
        f"/records/{rid}/queries",
        {"field": "moca_raw", "text": "x"},
        403,
    )
    inbox = api(client, staff["inv"], "GET", "/queries?status=open", None, 200)
    assert [q["id"] for q in inbox] == [query["id"]]
    assert api(client, staff["inv2"], "GET", "/queries", None, 200) == []
    api(
        client,
        staff["inv"],
        "POST",
        f"/queries/{query['id']}/answer",
        {"answer": "Confirmed against source"},
        200,
    )
    api(client, staff["monitor"], "POST", f"/queries/{query['id']}/close", {}, 200)
    api(
        client,
        staff["monitor"],
        "POST",
        f"/queries/{query['id']}/reopen",
        {"note": "one more"},
        200,
    )
    api(client, staff["monitor"], "POST", f"/records/{rid}/verify", {}, 200)
    # monitors and data managers cannot change values
    api(
        client,
        staff["monitor"],
        "PUT",
        f"/participants/{subject}/visits/screening/forms/moca",
        {"values": moca(25), "submit": True, "reason": "x"},
        403,
    )
    # the reopened query stands: a record with an unresolved query is not locked
    refused = api(client, staff["dm"], "POST", f"/records/{rid}/lock", {}, 409)
    assert refused["queries"] == [query["id"]]
    api(client, staff["inv"], "POST", f"/queries/{query['id']}/answer", {"answer": "Same"}, 200)
    api(client, staff["monitor"], "POST", f"/queries/{query['id']}/close", {}, 200)
    api(client, staff["dm"], "POST", f"/records/{rid}/lock", {}, 200)
    api(
        client,
        staff["inv"],
        "PUT",
        f"/participants/{subject}/visits/screening/forms/moca",
        {"values": moca(25), "submit": True, "reason": "x"},
        409,
    )
    api(client, staff["dm"], "POST", f"/records/{rid}/unlock", {}, 422)
    api(client, staff["dm"], "POST", f"/records/{rid}/unlock", {"reason": "query"}, 200)


def test_emergency_unblinding(client: FlaskClient) -> None:
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    arm = db.session.scalars(select(Allocation.arm_code)).one()
    api(
        client,
        staff["inv"],
        "POST",
        f"/participants/{subject}/unblinding",
        {"password": "not-my-password", "reason": "SAE", "category": "serious_adverse_event"},
        403,
    )
    api(
        client,
        staff["coord"],
        "POST",
        f"/participants/{subject}/unblinding",
        {"password": PASSWORD, "reason": "SAE", "category": "serious_adverse_event"},
        403,
    )
    result = api(
        client,
        staff["inv"],
        "POST",
        f"/participants/{subject}/unblinding",
        {
            "password": PASSWORD,
            "reason": "Suspected SAE needing treatment decision",
            "category": "serious_adverse_event",
        },
        200,
    )
    assert result["arm_code"] == arm and result["signed_by"] == "Inv"
    events = api(client, staff["sponsor"], "GET", "/unblindings", None, 200)
    assert events[0]["subject_code"] == subject
    assert events[0]["reason"].startswith("Suspected SAE")
    assert arm not in json.dumps(events)
    participant = api(client, staff["monitor"], "GET", f"/participants/{subject}", None, 200)
    assert participant["is_emergency_unblinded"] is True


def test_stratification_factor_missing_is_422(client: FlaskClient) -> None:
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    p = db.session.scalars(select(Participant).where(Participant.subject_code == subject)).one()
    assert p.status == "enrolled"
    from dtx_trials.services.protocols import active_protocol
    from dtx_trials.services.randomization import derive_stratum

    _, protocol = active_protocol(db.session, staff.trial)
    import pytest

    from dtx_trials.services.errors import ValidationError

    with pytest.raises(ValidationError, match="stratification factor moca_band missing"):
        derive_stratum(protocol, {"age": 70}, "BJ01")
    key, factors = derive_stratum(protocol, {"moca_total": 24}, "BJ01")
    assert key == "site=BJ01|moca_band=moca_22_25" and factors["site"] == "BJ01"


def test_stratification_uses_the_factor_visit_value(client: FlaskClient) -> None:
    """A later value of the factor's field (here a MoCA recorded at week 24 before
    randomization, as a data-entry slip would) does not decide the stratum: the factor reads
    its visit (screening by default) — issue #17."""
    from dtx_trials.models import FormRecord, Visit

    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff, raw_moca=23)  # total 24: MoCA 22-25
    p = db.session.scalars(select(Participant).where(Participant.subject_code == subject)).one()
    later = Visit(participant_id=p.id, visit_code="week_24", status="planned")
    db.session.add(later)
    db.session.flush()
    db.session.add(FormRecord(participant_id=p.id, visit_id=later.id, form_code="moca",
                              status="submitted", data={"moca_total": 19}))
    db.session.commit()
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    allocation = db.session.scalars(
        select(Allocation).where(Allocation.participant_id == p.id)).one()
    assert allocation.factors["moca_band"] == "moca_22_25"


def test_stratification_factor_visit_is_validated() -> None:
    from protocols.loader import load_protocol_report
    from tests.dtx_trials.trial_flow import LIBRARY

    text = (LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8")
    anchor = "      field: moca_total\n"
    assert anchor in text
    lines = text[: text.index(anchor)].count("\n") + 2

    def errors(visit: str) -> list[str]:
        report = load_protocol_report(text.replace(anchor, anchor + f"      visit: {visit}\n"))
        return [f"{i.line}: {i.path}: {i.message}" for i in report.errors]

    assert errors("screening") == []
    assert errors("week_24") == [
        f"{lines}: randomization.factors[0].visit: visit 'week_24' is after "
        "randomization: a stratification factor needs a value known when randomizing"]
    assert errors("baseline") == [
        f"{lines}: randomization.factors[0].visit: field 'moca_total' is not collected at "
        "visit 'baseline'"]
    assert errors("screenin") == [
        f"{lines}: randomization.factors[0].visit: unknown visit 'screenin' (did you mean "
        "'screening'?)"]


def test_consent_due_after_consent_amendment(client: FlaskClient) -> None:
    """A new consent version makes `missing_consents` non-empty: re-consent is required."""
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    before = api(client, staff["inv"], "GET", f"/participants/{subject}", None, 200)
    assert before["missing_consents"] == []
    from tests.dtx_trials.trial_flow import LIBRARY

    text = (
        (LIBRARY / "cognitive_impairment.yaml")
        .read_text(encoding="utf-8")
        .replace(
            '{id: main_icf, version: "1.0", language: zh-CN',
            '{id: main_icf, version: "1.1", language: zh-CN',
        )
    )
    client.post(
        "/api/v1/trials/MCI-COGTRAIN-01/protocol-versions",
        data=text,
        headers={**staff["sponsor"].headers, "Content-Type": "application/x-yaml"},
    )
    api(client, staff["sponsor"], "POST", "/protocol-versions/2/activate", {}, 200)
    after = api(client, staff["inv"], "GET", f"/participants/{subject}", None, 200)
    assert after["missing_consents"] == ["main_icf v1.1"]
    api(
        client,
        staff["inv"],
        "POST",
        f"/participants/{subject}/consents",
        {"document_id": "main_icf", "version": "1.1", "language": "zh-CN"},
        201,
    )
    assert (
        api(client, staff["inv"], "GET", f"/participants/{subject}", None, 200)["missing_consents"]
        == []
    )
