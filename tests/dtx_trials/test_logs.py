"""SEC-10: credentials, tokens and direct identifiers never reach the logs."""

from __future__ import annotations

import logging

import pytest
from flask.testing import FlaskClient

from tests.dtx_trials.trial_flow import api, enrolled_mci_participant, load_trial
from tests.helpers import PASSWORD


def test_sec_10_no_secrets_or_identifiers_in_logs(client: FlaskClient,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    api(client, staff["inv"], "POST", f"/participants/{subject}/unblinding",
        {"password": "wrong password!!", "reason": "SAE", "category": "other"}, 403)
    client.post("/api/v1/auth/tokens", json={"username": "inv", "password": "nope-nope-nope"})
    secrets = [PASSWORD, "wrong password!!", "nope-nope-nope", "Li Lei", "13900001111",
               *(account.token or "" for account in staff.accounts.values())]
    text = "\n".join(record.getMessage() for record in caplog.records)
    for secret in secrets:
        assert secret not in text
