"""SEC-09 over the whole API: schemathesis generates requests from /api/v1/openapi.json for
every operation, sent with the real tokens of the trial's roles; no response may be a server
error, and every documented response must match its schema.

Reduced size (``make test``): 3 examples per operation as the sponsor and an investigator;
full size (``make reliability``): 25 examples per operation as every staff role.
"""

from __future__ import annotations

import collections

import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.dtx_trials.trial_flow import enrolled_mci_participant, load_trial
from tests.reliability.conftest import Figures, scaled

# Operations that would end the caller's own session or need a password round trip.
SKIP = {("POST", "/api/v1/auth/tokens"), ("DELETE", "/api/v1/auth/tokens/{token_id}")}
ROLES = scaled(
    ("sponsor", "inv"),
    ("sponsor", "inv", "coord", "monitor", "dm", "stat", "unblinded", "auditor"),
)
EXAMPLES = scaled(3, 25)


def _probe(operation: object, headers: dict[str, str], tally: collections.Counter[str]) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())  # type: ignore[attr-defined]
    def probe(case):  # type: ignore[no-untyped-def]
        response = case.call(headers=headers)
        tally["requests"] += 1
        tally[f"{response.status_code // 100}xx"] += 1
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    probe()


def test_sec_09_schemathesis_no_server_errors(
    app: Flask, client: FlaskClient, figures: Figures
) -> None:
    staff = load_trial(client)
    enrolled_mci_participant(client, staff)
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [r.ok() for r in schema.get_all_operations()]
    tally: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    tested = 0
    for operation in operations:
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        for who in ROLES:
            try:
                _probe(operation, staff[who].headers, tally)
            except Exception as exc:  # a failed check: name it, go on with the others
                failures.append(f"{operation.method.upper()} {operation.path} as {who}: {exc}")
        tested += 1
    figures.add("operations in the OpenAPI document", len(operations))
    figures.add("operations fuzzed", tested)
    figures.add("roles", ", ".join(ROLES))
    figures.add("requests", tally["requests"])
    figures.add("answers 2xx / 4xx / 5xx", f"{tally['2xx']} / {tally['4xx']} / {tally['5xx']}")
    figures.add("failed checks (server error or schema mismatch)", len(failures))
    assert len(operations) >= 40
    assert tested >= 38
    assert tally["requests"] >= tested * len(ROLES)
    assert not failures, "\n".join(failures)
