"""A small realistic trial for export tests: identifiers, missing codes, audit, signatures, AEs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

from analysis.exports import (
    AdverseEvent,
    ArmInfo,
    AuditEntry,
    ExportData,
    Exposure,
    FormValue,
    SignatureEntry,
    SiteInfo,
    SubjectRecord,
    TrialMeta,
)
from ecrf.model import Choice, FieldDef, FormDef, Label, VisitDef

# Direct identifiers that must never appear in any export file.
PATIENT_NAME = "张伟 Zhang Wei"
PATIENT_PHONE = "13812345678"
NATIONAL_ID = "11010519491231002X"
ARM_NAMES = ("CogniTrain app", "Sham app")
ARM_CODES = ("ACTIVE", "SHAM")

CONTACT = FormDef(
    id="contact",
    title=Label("Contact details", "联系方式"),
    fields=(
        FieldDef("full_name", "text", Label("Full name", "姓名"), identifier=True),
        FieldDef("phone", "text", Label("Mobile phone", "手机"), identifier=True),
        FieldDef("national_id", "text", Label("National ID", "身份证号"), identifier=True),
        FieldDef("preferred_language", "single_choice", Label("Preferred language", "首选语言"),
                 choices=(Choice("zh", Label("Chinese", "中文")),
                          Choice("en", Label("English", "英文")))),
    ),
)
VITALS = FormDef(
    id="vitals",
    title=Label("Vital signs", "生命体征"),
    fields=(
        FieldDef("sbp", "integer", Label("Systolic blood pressure", "收缩压"), unit="mmHg",
                 required=True, allow_missing_codes=("not_done",)),
        FieldDef("weight", "decimal", Label("Weight", "体重"), unit="kg", decimals=1),
        FieldDef("fasting", "yesno", Label("Fasting", "空腹")),
        FieldDef("consent_scan", "file", Label("Consent scan", "知情同意扫描件")),
    ),
)
ADAS = FormDef(
    id="adas_cog",
    title=Label("ADAS-Cog", "阿尔茨海默病评估量表"),
    respondent="site",
    fields=(
        FieldDef("total", "decimal", Label("ADAS-Cog total score", "总分"),
                 allow_missing_codes=("not_done", "unknown")),
        FieldDef("symptoms", "multiple_choice", Label("Symptoms today", "今日症状"),
                 choices=(Choice("fatigue", Label("Fatigue", "疲劳")),
                          Choice("headache", Label("Headache", "头痛")),
                          Choice("none", Label("None", "无")))),
        FieldDef("comment", "text", Label("Comment", "备注"), max_length=200),
        FieldDef("intro", "descriptive", Label("Read the instructions", "请阅读说明")),
    ),
)
FORMS = (CONTACT, VITALS, ADAS)
VISITS = (
    VisitDef("screening", Label("Screening", "筛选"), day=-14, forms=("contact", "vitals"),
             anchor="screening"),
    VisitDef("week12", Label("Week 12", "第12周"), day=84, forms=("vitals", "adas_cog")),
)
EXPORTED_AT = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)


def _values(code: str, n: int) -> list[FormValue]:
    return [
        FormValue(code, "screening", "contact", "full_name", PATIENT_NAME),
        FormValue(code, "screening", "contact", "phone", PATIENT_PHONE),
        FormValue(code, "screening", "contact", "national_id", NATIONAL_ID),
        FormValue(code, "screening", "contact", "preferred_language", "zh"),
        FormValue(code, "screening", "vitals", "sbp", 120 + n, status="signed",
                  collected_on=date(2026, 1, 5)),
        FormValue(code, "screening", "vitals", "weight", 61.5 + n, status="signed",
                  collected_on=date(2026, 1, 5)),
        FormValue(code, "screening", "vitals", "fasting", "1", status="signed",
                  collected_on=date(2026, 1, 5)),
        FormValue(code, "screening", "vitals", "consent_scan", "file:abc123"),
        FormValue(code, "week12", "vitals", "sbp", {"missing": "not_done"},
                  collected_on=date(2026, 4, 1)),
        FormValue(code, "week12", "adas_cog", "total", 17.5 - n,
                  collected_on=date(2026, 4, 1)),
        FormValue(code, "week12", "adas_cog", "symptoms", ["fatigue", "headache"],
                  collected_on=date(2026, 4, 1)),
        FormValue(code, "week12", "adas_cog", "comment", "Felt well", status="draft",
                  collected_on=date(2026, 4, 1)),
    ]


def make_export_data(*, blinded: bool = True) -> ExportData:
    subjects = (
        SubjectRecord("S001", "BJ01", "randomized", sex="F", age=72, arm_code="ACTIVE",
                      consented_on=date(2026, 1, 3), randomized_on=date(2026, 1, 20)),
        SubjectRecord("S002", "SH01", "completed", sex="M", age=93, arm_code="SHAM",
                      consented_on=date(2026, 1, 4), randomized_on=date(2026, 1, 21),
                      completed_on=date(2026, 7, 1)),
        SubjectRecord("S003", "BJ01", "withdrawn", sex="F", age=68, arm_code="ACTIVE",
                      consented_on=date(2026, 1, 6), randomized_on=date(2026, 1, 22),
                      withdrawn_on=date(2026, 3, 2), withdrawal_reason="Moved away"),
    )
    values = tuple(v for n, s in enumerate(subjects) for v in _values(s.subject_code, n))
    audit = (
        AuditEntry("S001", "screening", "vitals", "sbp", None, 118, "u-inv1", "Dr Li Na", "BJ01",
                   datetime(2026, 1, 5, 9, 0, tzinfo=UTC)),
        AuditEntry("S001", "screening", "vitals", "sbp", 118, 120, "u-inv1", "Dr Li Na", "BJ01",
                   datetime(2026, 1, 6, 9, 0, tzinfo=UTC), reason="Transcription error"),
        AuditEntry("S001", "screening", "contact", "phone", None, PATIENT_PHONE, "u-inv1",
                   "Dr Li Na", "BJ01", datetime(2026, 1, 5, 8, 0, tzinfo=UTC)),
    )
    signatures = (
        SignatureEntry("S001", "screening", "vitals", "u-inv1", "Dr Li Na", "BJ01", "authorship",
                       datetime(2026, 1, 6, 10, 0, tzinfo=UTC)),
        SignatureEntry("S001", "screening", "vitals", "u-pi", "Prof Wang Min", "BJ01", "approval",
                       datetime(2026, 1, 7, 10, 0, tzinfo=UTC)),
    )
    return ExportData(
        trial=TrialMeta(
            code="COG-DTX-01", title="Cognitive training app in mild cognitive impairment",
            protocol_version="3.0", sponsor="Example Digital Health Ltd.",
            product_name="CogniTrain", blinded=blinded,
            arms=(ArmInfo(ARM_CODES[0], ARM_NAMES[0]), ArmInfo(ARM_CODES[1], ARM_NAMES[1])),
        ),
        forms=FORMS,
        visits=VISITS,
        sites=(SiteInfo("BJ01", "北京协和医院"), SiteInfo("SH01", "Shanghai Ruijin Hospital")),
        subjects=subjects,
        values=values,
        exported_at=EXPORTED_AT,
        audit=audit,
        signatures=signatures,
        adverse_events=(
            AdverseEvent("S001", "Headache", date(2026, 2, 1), decoded_term="Headache",
                         body_system="Nervous system disorders"),
            AdverseEvent("S001", "Eye strain", date(2026, 2, 9), severity="MODERATE",
                         relationship="POSSIBLY RELATED", end_on=date(2026, 2, 12)),
            AdverseEvent("S002", "Fall", date(2026, 3, 1), serious=True, severity="SEVERE",
                         outcome="Recovered/resolved"),
        ),
        exposures=tuple(
            Exposure(s.subject_code, ARM_NAMES[0] if s.arm_code == "ACTIVE" else ARM_NAMES[1],
                     date(2026, 1, 21), date(2026, 4, 1), 25.0, "min/day")
            for s in subjects
        ),
        sdtm_findings={"vitals": "VS", "adas_cog": "QS"},
    )


def unblinded() -> ExportData:
    return replace(make_export_data(), trial=replace(make_export_data().trial, blinded=False))
