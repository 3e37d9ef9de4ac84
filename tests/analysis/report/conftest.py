"""Session fixtures: one realistic report built once for all PDF checks, which run on it as
rendered and as signed (PAdES, dtx_trials/report_signing.py): signing must keep every check."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from report_samples import REAL_ARMS, make_spec

from analysis.report import ReportSpec, build_report


@pytest.fixture(scope="session")
def report_spec() -> ReportSpec:
    return make_spec()


@pytest.fixture(scope="session")
def unsigned_report_pdf(report_spec: ReportSpec) -> bytes:
    return build_report(report_spec, forbidden_terms=REAL_ARMS)


@pytest.fixture(scope="session", params=["unsigned", "signed"])
def report_pdf(request: pytest.FixtureRequest, unsigned_report_pdf: bytes,
               tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if request.param == "unsigned":
        return unsigned_report_pdf
    from dtx_trials.report_signing import ReportSigner, generate_report_key, sign_report

    folder = tmp_path_factory.mktemp("report-signing")
    generate_report_key(folder / "report.key", folder / "report.crt", "dtx test report signing")
    signer = ReportSigner(folder / "report.key", folder / "report.crt")
    return sign_report(unsigned_report_pdf, signer, signed_at=datetime(2026, 12, 1, tzinfo=UTC),
                       reason="PDF checks").pdf
