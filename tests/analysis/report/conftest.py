"""Session fixtures: one realistic report built once for all PDF checks."""

from __future__ import annotations

import pytest
from report_samples import REAL_ARMS, make_spec

from analysis.report import ReportSpec, build_report


@pytest.fixture(scope="session")
def report_spec() -> ReportSpec:
    return make_spec()


@pytest.fixture(scope="session")
def report_pdf(report_spec: ReportSpec) -> bytes:
    return build_report(report_spec, forbidden_terms=REAL_ARMS)
