"""Blinded analyses reveal nothing about allocation (issue #14): a blinded statistician gets a
pooled data review by default; a comparative run with dummy labels only where the protocol names
its role, with labels from a key it never sees, committed to before the run and opened later by
a role that sees the arms. Tested as the blinded statistician would attack it."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from pypdf import PdfReader
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import Allocation, AuditEvent, Participant, Trial
from tests.dtx_trials.analysis_data import populated_trial
from tests.dtx_trials.trial_flow import LIBRARY
from tests.helpers import login, make_user

CODE = "T2D-COACH-01"


def _variant(tmp_path: Path, comparative: bool) -> Path:
    text = (LIBRARY / "type2_diabetes.yaml").read_text(encoding="utf-8")
    line = "  blinded_roles: [outcome_assessor, statistician, sponsor]\n"
    assert line in text
    if comparative:
        text = text.replace(line, line + "  comparative_review: [statistician]\n")
    path = tmp_path / "t2d.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _trial(tmp_path: Path, *, comparative: bool, n: int = 40):  # type: ignore[no-untyped-def]
    # a known secret before any allocation: the label keys (and this test) are reproducible
    return populated_trial(str(_variant(tmp_path, comparative)), n)


def _accounts(client: FlaskClient, trial: Trial) -> dict:  # type: ignore[type-arg]
    return {
        name: login(client, make_user(name, role=role, trial=trial))
        for name, role in (("stat", "statistician"), ("unblinded", "unblinded_statistician"))
    }


def _run(client: FlaskClient, who, body: dict) -> tuple[str, dict]:  # type: ignore[no-untyped-def,type-arg]
    response = client.post(f"/api/v1/trials/{CODE}/analyses", json=body, headers=who.headers)
    assert response.status_code == 202, response.get_json()
    location = response.headers["Location"]
    run = client.get(location, headers=who.headers).get_json()
    assert run["status"] == "succeeded", run.get("error")
    return location, run


def _pdf_text(client: FlaskClient, who, location: str) -> str:  # type: ignore[no-untyped-def]
    pdf = client.get(f"{location}/report.pdf", headers=who.headers)
    assert pdf.status_code == 200
    return " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.data)).pages)


def _true_arms() -> dict[str, str]:
    return dict(
        db.session.execute(
            select(Participant.subject_code, Allocation.arm_code).join(
                Allocation, Allocation.participant_id == Participant.id
            )
        ).all()
    )


def test_a_blinded_run_is_a_pooled_review_by_default(client: FlaskClient, tmp_path: Path) -> None:
    trial = _trial(tmp_path, comparative=False)
    who = _accounts(client, trial)
    location, run = _run(client, who["stat"], {})
    assert run["provenance"]["review"] == "pooled"
    assert "label_commitment" not in run["provenance"]
    results = run["results"]
    assert results["review"] == "pooled" and [a["label"] for a in results["arms"]] == ["All"]
    assert results["multiplicity"] is None
    for endpoint in results["endpoints"]:
        assert endpoint["headline"] is None and endpoint["sensitivity"] == []
        assert endpoint["result"]["pooled"]["n"] == endpoint["n_by_arm"]["All"]
    # every subject of every listing carries the one pooled label: nothing to group by
    text = json.dumps(results)
    assert '"A"' not in text and '"B"' not in text
    pages = _pdf_text(client, who["stat"], location)
    assert "all arms pooled (blinded data review)" in pages
    assert "Arm A" not in pages and "Arm B" not in pages and " vs " not in pages
    # a comparative run is refused: the protocol names no role for it
    refused = client.post(f"/api/v1/trials/{CODE}/analyses", json={"review": "comparative"},
                          headers=who["stat"].headers)
    assert refused.status_code == 403
    assert "blinding.comparative_review" in refused.get_json()["message"]
    # an unblinded run has no blinded review style: asking for both is a 422
    wrong = client.post(f"/api/v1/trials/{CODE}/analyses",
                        json={"unblinded": True, "review": "pooled"},
                        headers=who["unblinded"].headers)
    assert wrong.status_code == 422 and "review" in wrong.get_json()["errors"]


def test_comparative_labels_are_keyed_committed_and_opened_by_the_unblinded(
    client: FlaskClient, tmp_path: Path
) -> None:
    trial = _trial(tmp_path, comparative=True)
    who = _accounts(client, trial)
    truth = _true_arms()
    mappings: list[dict[str, str]] = []
    for _ in range(6):
        location, run = _run(client, who["stat"], {"review": "comparative"})
        provenance = run["provenance"]
        assert provenance["review"] == "comparative" and len(provenance["label_commitment"]) == 64
        # what the blinded statistician holds: results, provenance (seed included), the PDF
        results = run["results"]
        assert results["review"] == "comparative"
        assert {a["label"] for a in results["arms"]} == {"A", "B"}
        for code in set(truth.values()):
            assert f'"{code}"' not in json.dumps(run)
        # the first release's attack: a shuffle seeded with the printed seed
        shuffled = sorted(set(truth.values()))
        random.Random(provenance["seed"]).shuffle(shuffled)
        # the unblinded statistician opens the commitment
        opened = client.get(f"{location}/labels", headers=who["unblinded"].headers)
        assert opened.status_code == 200, opened.get_json()
        body = opened.get_json()
        assert body["matches"] is True and body["commitment"] == provenance["label_commitment"]
        assert set(body["labels"]) == {"A", "B"} and set(body["labels"].values()) == set(
            truth.values()
        )
        mappings.append(body["labels"])
        # the opened mapping is the one the run used: every listed subject's dummy label maps
        # to the subject's real arm
        listed = results["listings"]
        rows = [r for table in listed.values() if isinstance(table, list) for r in table
                if isinstance(r, dict) and "subject" in r and r.get("arm")]
        assert rows, "the listings name no subject"
        for row in rows:
            assert body["labels"][row["arm"]] == truth[row["subject"]]
        # the blinded statistician may not open it
        assert client.get(f"{location}/labels", headers=who["stat"].headers).status_code == 403
        assert _pdf_text(client, who["stat"], location).count("Arm A") >= 1
    # labels vary from run to run with the key (the seed printed beside them is independent)
    assert len({tuple(sorted(m.items())) for m in mappings}) == 2
    opened_events = db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "analysis.labels_opened")
    ).all()
    assert len(opened_events) == 6


def test_the_key_never_reaches_the_trail_or_the_run(client: FlaskClient, tmp_path: Path) -> None:
    """Neither the label key nor the nonce is stored: the run row, its audit events and its
    results hold only the commitment."""
    trial = _trial(tmp_path, comparative=True, n=24)
    who = _accounts(client, trial)
    location, run = _run(client, who["stat"], {"review": "comparative"})
    body = client.get(f"{location}/labels", headers=who["unblinded"].headers).get_json()
    nonce = body["nonce"]
    stored = json.dumps(run) + " ".join(
        json.dumps(e.changes) for e in db.session.scalars(select(AuditEvent))
    )
    assert nonce not in stored
    assert body["commitment"] in stored


@pytest.mark.parametrize("review", ["pooled", "comparative"])
def test_review_is_validated(client: FlaskClient, tmp_path: Path, review: str) -> None:
    trial = _trial(tmp_path, comparative=True, n=12)
    who = _accounts(client, trial)
    bad = client.post(f"/api/v1/trials/{CODE}/analyses", json={"review": review + "x"},
                      headers=who["stat"].headers)
    assert bad.status_code == 422 and "review" in bad.get_json()["errors"]["json"]
