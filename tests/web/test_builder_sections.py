"""The builder's eligibility, endpoint, factor, minimization, edit-check, consent and device-
stream sections (issue #22): an item's inputs filled from the YAML and posted back leave the
YAML as it was; added items are checked by the loader, its messages shown at the section."""

from __future__ import annotations

import html as html_lib
import re
from html.parser import HTMLParser

from flask import Flask
from flask.testing import FlaskClient

from protocols import editing
from tests.dtx_trials.trial_flow import load_trial
from tests.web.web_helpers import MCI, PageClient, check_accessible

CODE = "MCI-COGTRAIN-01"


def _yaml(page: str) -> str:
    match = re.search(r'<textarea id="b-yaml"[^>]*>(.*?)</textarea>', page, re.S)
    assert match, "no YAML on the page"
    return html_lib.unescape(match.group(1))


class _Inputs(HTMLParser):
    """The values a browser would post for the inputs whose names start with a prefix."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.values: dict[str, str] = {}
        self._open: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        name = a.get("name", "")
        if tag == "input" and name.startswith(self.prefix):
            self.values[name] = a.get("value", "")
        elif tag == "textarea" and name.startswith(self.prefix):
            self._open, self.values[name] = name, ""
        elif tag == "select" and name.startswith(self.prefix):
            self._select, self.values[name] = name, ""
        elif tag == "option" and self._select and "selected" in a:
            self.values[self._select] = a["value"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self._open = None
        if tag == "select":
            self._select = None

    def handle_data(self, data: str) -> None:
        if self._open:
            self.values[self._open] += data


def _inputs(page: str, section: str) -> dict[str, str]:
    parser = _Inputs(f"{section}.")
    parser.feed(page)
    return parser.values


def _act(page: PageClient, text: str, action: str, **inputs: str) -> tuple[int, str]:
    response = page.post(f"{MCI}/builder", {"protocol_text": text, "action": action, **inputs})
    return response.status_code, response.get_data(as_text=True)


def test_every_section_item_round_trips_through_the_page(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    sponsor = PageClient(app, staff["sponsor"])
    page = sponsor.text(f"{MCI}/builder")
    check_accessible(page)
    text = editing.dump(editing.parse(_yaml(page)))  # the builder writes YAML without comments
    # the richest sections through the page (every section and library file: the pure tests)
    refs = {
        "endpoints": "adas_change_w24",
        "factors": "moca_band",
        "checks": "adverse_events||ae_dates",
        "consents": "main_icf|zh-CN",
    }
    filled = {}
    for section, ref in refs.items():
        status, edited = _act(sponsor, text, f"edit:{section}:{ref}")
        assert status == 200 and _yaml(edited) == text
        filled[section] = _inputs(edited, section)
        status, put = _act(sponsor, text, f"put:{section}", **filled[section])
        assert status == 200, re.findall(r'class="error"[^>]*>([^<]*)', put)
        assert _yaml(put) == text, section
    check_accessible(edited)
    endpoint = filled["endpoints"]
    assert endpoint["endpoints.model"] == "mmrm" and endpoint["endpoints.analysis_set"] == "fas"
    assert "started_achei | hypothetical" in endpoint["endpoints.events"]
    # the minimization settings are always shown filled; posting them back changes nothing
    minimization = _inputs(page, "minimization")
    assert minimization["minimization.stratify_by_site"] == "yes"
    assert _yaml(_act(sponsor, text, "put:minimization", **minimization)[1]) == text


def test_added_items_are_checked_by_the_loader(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    sponsor = PageClient(app, staff["sponsor"])
    text = _yaml(sponsor.text(f"{MCI}/builder"))
    status, page = _act(
        sponsor, text, "put:eligibility", **{
            "eligibility.id": "inc_sleep", "eligibility.kind": "inclusion",
            "eligibility.text.en": "Sleeps", "eligibility.text.zh": "",
            "eligibility.expression": "[hours_slept] > 4",
        })
    assert status == 200
    data = editing.parse(_yaml(page))
    assert data["eligibility"][-1] == {"id": "inc_sleep", "kind": "inclusion",
                                       "text": {"en": "Sleeps"},
                                       "expression": "[hours_slept] > 4"}
    issues = re.search(r'id="b-eligibility-issues">(.*?)</ul>', page, re.S)
    assert issues and "eligibility[6].expression" in issues.group(1) and "hours_slept" in (
        issues.group(1))
    # removing it gives back the text the builder started from
    status, page = _act(sponsor, _yaml(page), "remove:eligibility:inc_sleep")
    assert status == 200 and editing.parse(_yaml(page)) == editing.parse(text)
    # a new stream, a new consent language, a factor; bad inputs are refused at the input
    status, bad = _act(sponsor, text, "put:streams", **{
        "streams.id": "steps", "streams.kind": "step_count", "streams.label.en": "",
        "streams.unit": "steps", "streams.cadence": "daily", "streams.min": "none",
    })
    assert status == 422 and _yaml(bad) == text
    assert 'id="b-streams-label-en-err"' in bad and 'id="b-streams-min-err"' in bad
    status, page = _act(sponsor, text, "put:factors", **{
        "factors.id": "age_band", "factors.label.en": "Age band", "factors.field": "age",
        "factors.weight": "", "factors.levels": "young | [age] < 70 | en: 60-69\nold | * | en: 70+",
    })
    assert status == 200
    factor = editing.parse(_yaml(page))["randomization"]["factors"][-1]
    assert factor["levels"][1] == {"code": "old", "label": {"en": "70+"}, "otherwise": True}
    assert _act(sponsor, text, "edit:eligibility:nothing")[0] == 404
    assert _act(sponsor, text, "put:nowhere")[0] == 400
    # only those who manage the protocol: site staff and the statistician get 403
    for role in ("inv", "stat"):
        other = PageClient(app, staff[role])
        for action in ("put:eligibility", "edit:eligibility:inc_age", "remove:consents:x|en"):
            assert _act(other, text, action)[0] == 403, (role, action)



def test_simulation_report_on_the_draft(app: Flask, client: FlaskClient) -> None:
    """The builder's simulate button runs the randomization simulation on the draft's own
    design (not the active version's) and shows balance and predictability per design."""
    staff = load_trial(client)
    sponsor = PageClient(app, staff["sponsor"])
    text = _yaml(sponsor.text(f"{MCI}/builder"))
    draft = editing.parse(text)
    draft["randomization"] = {**draft["randomization"], "method": "simple"}
    draft["randomization"].pop("block_sizes")
    status, page = _act(sponsor, editing.dump(draft), "simulate", sim_n="40", sim_runs="5")
    assert status == 200, re.findall(r'class="error"[^>]*>([^<]*)', page)
    table = re.search(r'<table id="b-sim-table">(.*?)</table>', page, re.S)
    assert table and "protocol: simple" in table.group(1) and "correct guesses" in table.group(1)
    assert "stratified blocks" in table.group(1) and "minimization" in table.group(1)
    check_accessible(page)
    status, page = _act(sponsor, text, "simulate", sim_n="5000", sim_runs="5")
    assert status == 422 and 'id="b-sim-n-err"' in page
    status, page = _act(sponsor, "code: X\n", "simulate", sim_n="40", sim_runs="5")
    assert status == 422 and "Fix the protocol&#39;s errors first" in page
    assert _act(PageClient(app, staff["inv"]), text, "simulate", sim_n="40",
                sim_runs="5")[0] == 403
