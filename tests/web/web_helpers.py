"""Browser-session helpers for page tests: sign in with a form, post with the CSRF token."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.helpers import Account

MCI = "/trials/MCI-COGTRAIN-01"
# the arms' full names (en, zh) and codes as they would appear in markup; the trial's title
# mentions a "sham app" (假训练应用), which is not an allocation
ARM_TERMS = (
    "Adaptive cognitive training",
    "Sham training (non-adaptive games)",
    "自适应认知训练",
    "假训练（非自适应游戏）",
    ">cogtrain<",
    ">sham<",
    '"cogtrain"',
    '"sham"',
    "(cogtrain)",
    "(sham)",
)


class PageClient:
    """A test client signed in through the login page, holding the session's CSRF token."""

    def __init__(self, app: Flask, account: Account | None = None) -> None:
        self.client: FlaskClient = app.test_client()
        self.csrf = ""
        if account is not None:
            self.sign_in(account.user.username, account.password)

    def sign_in(self, username: str, password: str) -> TestResponse:
        page = self.client.get("/login").get_data(as_text=True)
        token = csrf_of(page)
        response = self.client.post(
            "/login", data={"username": username, "password": password, "csrf_token": token}
        )
        if response.status_code == 302:
            self.csrf = csrf_of(self.client.get("/").get_data(as_text=True))
        return response

    def get(self, path: str, **kwargs: object) -> TestResponse:
        return self.client.get(path, **kwargs)  # type: ignore[arg-type]

    def post(
        self, path: str, data: dict[str, object] | None = None, **kwargs: object
    ) -> TestResponse:
        return self.client.post(path, data={"csrf_token": self.csrf, **(data or {})}, **kwargs)  # type: ignore[arg-type]

    def text(self, path: str, expect: int = 200) -> str:
        response = self.get(path)
        assert response.status_code == expect, (path, response.status_code)
        return response.get_data(as_text=True)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


class FormAudit(HTMLParser):
    """Collect inputs and labels to check that every visible input has a bound label."""

    def __init__(self) -> None:
        super().__init__()
        self.html_lang: str | None = None
        self.inputs: list[str] = []
        self.labels: set[str] = set()
        self.unlabelled: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.html_lang = a.get("lang")
        if tag == "label" and a.get("for"):
            self.labels.add(a["for"] or "")
        if tag in ("input", "select", "textarea"):
            if a.get("type") in ("hidden", "submit"):
                return
            if not a.get("id") and not a.get("aria-label"):
                self.unlabelled.append(str(a))
                return
            self.inputs.append(a.get("id") or "")

    def missing_labels(self) -> list[str]:
        return self.unlabelled + [i for i in self.inputs if i and i not in self.labels]


def check_accessible(html: str) -> None:
    audit = FormAudit()
    audit.feed(html)
    assert audit.html_lang in ("en", "zh-Hans", "zh-Hant"), audit.html_lang
    assert not audit.missing_labels(), audit.missing_labels()
    assert "style=" not in html and "<script>" not in html  # CSP: no inline styles or scripts
