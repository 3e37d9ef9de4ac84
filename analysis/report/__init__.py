"""Submission-ready PDF statistical report: plain ReportSpec in, linearized PDF bytes out.

Public API: ``build_report(spec, forbidden_terms=..., cjk_font_path=None) -> bytes``,
``report_file_name(spec) -> str`` and the input dataclasses of ``analysis.report.spec``;
``validate_consort`` checks CONSORT arithmetic on its own.
"""

from analysis.report.consort import validate_consort
from analysis.report.document import build_report, report_file_name
from analysis.report.spec import (
    BlindingError,
    ConsortArm,
    ConsortData,
    ConsortError,
    FigureBlock,
    ForestData,
    ForestRow,
    KaplanMeierData,
    ListingBlock,
    MeanChangeData,
    MeanChangeSeries,
    ReportError,
    ReportSpec,
    Section,
    SurvivalCurve,
    TableBlock,
    TextBlock,
)

__all__ = [
    "BlindingError",
    "ConsortArm",
    "ConsortData",
    "ConsortError",
    "FigureBlock",
    "ForestData",
    "ForestRow",
    "KaplanMeierData",
    "ListingBlock",
    "MeanChangeData",
    "MeanChangeSeries",
    "ReportError",
    "ReportSpec",
    "Section",
    "SurvivalCurve",
    "TableBlock",
    "TextBlock",
    "build_report",
    "report_file_name",
    "validate_consort",
]
