"""SEC-09: random JSON sent to the form and participant routes gets a 2xx or a 4xx with the
one error shape, never a 5xx, and nothing half-written."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtx_trials.services import audit
from tests.dtx_trials.trial_flow import load_trial

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = [
    "age",
    "sex",
    "gds_total",
    "moca_raw",
    "moca_edu_point",
    "screening_on",
    "unknown",
    "adas_total",
    "dementia_dx",
]


def test_sec_09_random_json_never_5xx(client: FlaskClient) -> None:
    staff = load_trial(client)
    who = staff["inv"]
    subject = client.post(
        "/api/v1/trials/MCI-COGTRAIN-01/participants", json={"site": "BJ01"}, headers=who.headers
    ).get_json()["subject_code"]
    base = f"/api/v1/trials/MCI-COGTRAIN-01/participants/{subject}"

    @settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        form=st.sampled_from(["screening", "moca", "adas_cog", "nope"]),
        visit=st.sampled_from(["screening", "baseline", "week_4", "x"]),
        values=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
        extra=st.dictionaries(
            st.sampled_from(
                ["submit", "reason", "expected_version", "acknowledged", "repeat_index", "bogus"]
            ),
            json_values,
            max_size=3,
        ),
    )
    def probe(form: str, visit: str, values: dict[str, Any], extra: dict[str, Any]) -> None:
        body = {"values": values, **extra}
        response = client.put(f"{base}/visits/{visit}/forms/{form}", json=body, headers=who.headers)
        assert response.status_code < 500, response.get_json()
        if response.status_code >= 400:
            assert {"code", "status", "message"} <= set(response.get_json())

    probe()
    for path, body in (
        (f"{base}/consents", {"document_id": 5}),
        (f"{base}/withdrawal", {"reason": ["x"]}),
        ("/api/v1/trials/MCI-COGTRAIN-01/participants", {"site": {"a": 1}}),
    ):
        assert client.post(path, json=body, headers=who.headers).status_code == 422
    from dtx_trials.extensions import db

    assert audit.verify(db.session).ok
