"""Trial set-up in the browser (issue #22): create a trial, build its protocol with the form
builder (forms, fields with choices, validation, branching, calculations, repeating logs,
missing-data codes; visits; arms), validate with the loader's messages, save an audited draft
version, preview an amendment's changes; the expression preview runs on the form engine."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, ProtocolVersion, Trial
from protocols.loader import load_protocol_text
from tests.dtx_trials.trial_flow import load_trial
from tests.web.web_helpers import MCI, PageClient, check_accessible


def _yaml(html: str) -> str:
    import html as html_lib

    match = re.search(r'<textarea id="b-yaml"[^>]*>(.*?)</textarea>', html, re.S)
    assert match, "no YAML on the page"
    return html_lib.unescape(match.group(1))


def _act(page: PageClient, code: str, text: str, action: str, **inputs: str) -> tuple[int, str]:
    response = page.post(
        f"/trials/{code}/builder", {"protocol_text": text, "action": action, **inputs}
    )
    return response.status_code, response.get_data(as_text=True)


def test_sponsor_builds_a_trial_from_scratch(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    sponsor = PageClient(app, staff["sponsor"])
    assert 'id="new-trial"' in sponsor.text("/")
    bad = sponsor.post("/trials/new", {"code": "no spaces", "title": "X"})
    assert bad.status_code == 422 and "letters, digits" in bad.text
    created = sponsor.post("/trials/new", {"code": "SLEEP-01", "title": "Insomnia app"})
    assert created.status_code == 302 and created.location.endswith("/trials/SLEEP-01/builder")
    page = sponsor.text("/trials/SLEEP-01/builder")
    check_accessible(page)
    text = _yaml(page)
    assert "code: SLEEP-01" in text and "errors to fix before saving." in page
    status, page = _act(
        sponsor,
        "SLEEP-01",
        text,
        "put_form",
        form_id="sleep_diary",
        form_title_en="Sleep diary",
        form_title_zh="睡眠日记",
        form_respondent="site",
    )
    assert status == 200
    fields = [
        {
            "f_id": "age",
            "f_type": "integer",
            "f_label_en": "Age",
            "f_required": "1",
            "f_min": "18",
            "f_max": "90",
            "f_missing_not_done": "1",
        },
        {
            "f_id": "sleep_hours",
            "f_type": "decimal",
            "f_label_en": "Hours slept",
            "f_unit": "h",
            "f_min": "0",
            "f_max": "24",
            "f_decimals": "1",
        },
        {
            "f_id": "nap",
            "f_type": "single_choice",
            "f_label_en": "Napped?",
            "f_choices": "0 = No | 否\n1 = Yes | 是",
        },
        {
            "f_id": "nap_minutes",
            "f_type": "integer",
            "f_label_en": "Nap minutes",
            "f_show_if": "[nap] = '1'",
        },
        {
            "f_id": "sleep_minutes",
            "f_type": "calculated",
            "f_label_en": "Minutes slept",
            "f_calculation": "[sleep_hours] * 60",
        },
    ]
    for inputs in fields:
        status, page = _act(
            sponsor, "SLEEP-01", _yaml(page), "put_field", f_form="sleep_diary", **inputs
        )
        assert status == 200, re.findall(r'class="error"[^>]*>([^<]*)', page)
    # a bad choice line and a bad day are refused next to their inputs, the text unchanged
    before = _yaml(page)
    status, bad_page = _act(
        sponsor,
        "SLEEP-01",
        before,
        "put_field",
        f_form="sleep_diary",
        f_id="x",
        f_type="single_choice",
        f_label_en="X",
        f_choices="oops",
    )
    assert status == 422 and "line 1" in bad_page and _yaml(bad_page) == before
    status, page = _act(
        sponsor,
        "SLEEP-01",
        before,
        "put_form",
        form_id="ae_log",
        form_title_en="Adverse events",
        form_repeating="1",
    )
    status, page = _act(
        sponsor,
        "SLEEP-01",
        _yaml(page),
        "put_field",
        f_form="ae_log",
        f_id="ae_term",
        f_type="text",
        f_label_en="Event",
    )
    status, page = _act(
        sponsor,
        "SLEEP-01",
        _yaml(page),
        "put_visit",
        v_id="baseline",
        v_label_en="Baseline",
        v_day="0",
        v_forms="sleep_diary",
    )
    assert status == 200
    status, bad_page = _act(
        sponsor,
        "SLEEP-01",
        _yaml(page),
        "put_visit",
        v_id="w2",
        v_label_en="Week 2",
        v_day="two weeks",
    )
    assert status == 422 and "whole number" in bad_page
    status, page = _act(
        sponsor,
        "SLEEP-01",
        _yaml(page),
        "put_arm",
        a_code="active",
        a_name_en="Sleep app",
        a_name_zh="睡眠应用",
        a_ratio="1",
    )
    status, page = _act(
        sponsor,
        "SLEEP-01",
        _yaml(page),
        "put_trial",
        t_title_en="Insomnia app",
        t_title_zh="失眠应用",
        t_area="insomnia",
        t_phase="pilot",
        t_version="1",
        t_blinding="open",
        t_method="permuted_block",
        t_blocks="2, 4",
    )
    text = _yaml(page)
    status, page = _act(sponsor, "SLEEP-01", text, "validate")
    assert "The protocol is valid." in page, re.findall(r"<li><code>(.*?)</code>", page)
    protocol = load_protocol_text(text)
    diary = protocol.form("sleep_diary")
    assert [f.id for f in diary.fields] == [
        "age",
        "sleep_hours",
        "nap",
        "nap_minutes",
        "sleep_minutes",
    ]
    assert diary.fields[0].allow_missing_codes == ("not_done",) and diary.fields[0].required
    assert diary.fields[2].choices[1].label.zh == "是"
    assert diary.fields[3].show_if == "[nap] = '1'"
    assert protocol.form("ae_log").repeating and protocol.arm("active").name.en == "Sleep app"
    status, page = _act(sponsor, "SLEEP-01", text, "save")
    assert status == 200 and "Stored as version 1." in page and 'id="b-activate"' in page
    trial = db.session.scalars(select(Trial).where(Trial.code == "SLEEP-01")).one()
    version = db.session.scalars(
        select(ProtocolVersion).where(ProtocolVersion.trial_id == trial.id)
    ).one()
    assert version.source_text == text
    assert (
        db.session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "protocol.upload", AuditEvent.trial_id == trial.id
            )
        ).first()
        is not None
    )
    # the builder reopens on the saved version's text, unchanged
    assert _yaml(sponsor.text("/trials/SLEEP-01/builder")) == text


def test_amendment_preview_and_roles(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    sponsor = PageClient(app, staff["sponsor"])
    text = _yaml(sponsor.text(f"{MCI}/builder"))
    status, page = _act(
        sponsor,
        "MCI-COGTRAIN-01",
        text,
        "put_field",
        f_form="screening",
        f_id="handedness",
        f_type="text",
        f_label_en="Handedness",
    )
    assert status == 200 and "Amendment: changes from the active version" in page
    assert "handedness" in page
    # staff who do not manage the protocol have no builder and no preview
    inv = PageClient(app, staff["inv"])
    assert inv.get(f"{MCI}/builder").status_code == 403
    assert inv.get("/trials/new").status_code == 403
    assert inv.post(f"{MCI}/builder", {"protocol_text": text}).status_code == 403
    assert (
        inv.client.post(
            f"{MCI}/builder/preview", json={"expression": "1"}, headers={"X-CSRF-Token": inv.csrf}
        ).status_code
        == 403
    )
    # without the CSRF token nothing is done
    assert sponsor.client.post(f"{MCI}/builder", data={"protocol_text": text}).status_code == 400


def test_expression_preview_runs_on_the_form_engine(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    sponsor = PageClient(app, staff["sponsor"])

    def preview(body: object) -> tuple[int, dict[str, object]]:
        response = sponsor.client.post(
            f"{MCI}/builder/preview", json=body, headers={"X-CSRF-Token": sponsor.csrf}
        )
        return response.status_code, response.get_json()

    assert preview({"expression": "[w] / ([h] / 100) ^ 2", "values": {"w": 81, "h": 180}}) == (
        200,
        {"value": 25, "fields": ["h", "w"], "text": "25"},
    )
    assert preview({"expression": "[nap] = '1'", "values": {"nap": "1"}})[1]["value"] is True
    status, body = preview({"expression": "[a] +", "values": {}})
    assert status == 422 and "column" in body["errors"]["expression"][0]  # type: ignore[index]
    assert preview({"values": {}})[0] == 422
    assert preview({"expression": "1", "values": [1]})[0] == 422
