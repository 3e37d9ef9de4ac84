"""A small realistic trial for export tests: identifiers, missing codes, audit, signatures, AEs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

from analysis.exports import (
    ArmInfo,
    AuditEntry,
    ExportData,
    FormValue,
    SignatureEntry,
    SiteInfo,
    SubjectRecord,
    TrialMeta,
)
from analysis.exports.data import DeviceValue, VisitDate
from ecrf.model import Choice, FieldDef, FormDef, Label, VisitDef
from protocols.model import CdiscSpec, CtTerm, DomainMap, TestMap, VariableMap

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
def _choices(*codes: tuple[str, str]) -> tuple[Choice, ...]:
    return tuple(Choice(code, Label(label, label)) for code, label in codes)


DEMOGRAPHICS = FormDef(
    id="demographics",
    title=Label("Demographics", "人口学资料"),
    fields=(
        FieldDef("sex", "single_choice", Label("Sex", "性别"),
                 choices=_choices(("1", "Male"), ("2", "Female"))),
        FieldDef("age", "integer", Label("Age", "年龄"), unit="years"),
    ),
)
AE_FORM = FormDef(
    id="adverse_events",
    title=Label("Adverse events", "不良事件"),
    repeating=True,
    fields=(
        FieldDef("ae_term", "text", Label("Event", "事件"), max_length=200),
        FieldDef("ae_onset_on", "date", Label("Onset", "发生日期")),
        FieldDef("ae_end_on", "date", Label("Resolved", "缓解日期"),
                 allow_missing_codes=("unknown",)),
        FieldDef("ae_severity", "single_choice", Label("Severity", "严重程度"),
                 choices=_choices(("mild", "Mild"), ("moderate", "Moderate"),
                                  ("severe", "Severe"))),
        FieldDef("ae_serious", "yesno", Label("Serious", "严重")),
        FieldDef("ae_related", "single_choice", Label("Related", "相关"),
                 choices=_choices(("no", "Not related"), ("possible", "Possibly related"))),
    ),
)
EOS = FormDef(
    id="end_of_study",
    title=Label("End of study", "研究结束"),
    fields=(
        FieldDef("eos_on", "date", Label("Last visit", "末次访视")),
        FieldDef("eos_status", "single_choice", Label("Status", "状态"),
                 choices=_choices(("completed", "Completed"), ("withdrew", "Withdrew"))),
    ),
)
FORMS = (CONTACT, VITALS, ADAS, DEMOGRAPHICS, AE_FORM, EOS)
VISITS = (
    VisitDef("screening", Label("Screening", "筛选"), day=-14,
             forms=("contact", "vitals", "demographics"), anchor="screening"),
    VisitDef("week12", Label("Week 12", "第12周"), day=84,
             forms=("vitals", "adas_cog", "adverse_events", "end_of_study")),
)


def _terms(*pairs: tuple[str, str]) -> tuple[CtTerm, ...]:
    return tuple(CtTerm(code, value) for code, value in pairs)


CDISC = CdiscSpec(
    sdtmig="3.4",
    ct_version="2025-09-26",
    mappings=(
        DomainMap("DM", form="demographics", variables=(
            VariableMap("SEX", field="sex", codelist="C66731",
                        terms=_terms(("1", "M"), ("2", "F"))),
            VariableMap("AGE", field="age"),
            VariableMap("AGEU", value="YEARS", codelist="C66781"),
        )),
        DomainMap("AE", form="adverse_events", variables=(
            VariableMap("AETERM", field="ae_term"),
            VariableMap("AESTDTC", field="ae_onset_on"),
            VariableMap("AEENDTC", field="ae_end_on", nullable=True),
            VariableMap("AESEV", field="ae_severity", codelist="C66769", terms=_terms(
                ("mild", "MILD"), ("moderate", "MODERATE"), ("severe", "SEVERE"))),
            VariableMap("AESER", field="ae_serious", codelist="C66742",
                        terms=_terms(("1", "Y"), ("0", "N"))),
            VariableMap("AEREL", field="ae_related",
                        terms=_terms(("no", "NOT RELATED"), ("possible", "POSSIBLY RELATED"))),
        )),
        DomainMap("DS", form="end_of_study", variables=(
            VariableMap("DSTERM", field="eos_status"),
            VariableMap("DSDECOD", field="eos_status", codelist="C66727", terms=_terms(
                ("completed", "COMPLETED"), ("withdrew", "WITHDRAWAL BY SUBJECT"))),
            VariableMap("DSSTDTC", field="eos_on"),
        )),
        DomainMap("EX", stream="app_minutes", variables=(
            VariableMap("EXDOSU", value="min", codelist="C71620"),
        )),
        DomainMap("VS", form="vitals", tests=(
            TestMap("sbp", "SBP", "Systolic Blood Pressure", unit="mmHg"),
            TestMap("weight", "WEIGHT", "Weight", unit="kg"),
            TestMap("fasting", "FASTING", "Fasting"),
        )),
        DomainMap("QS", form="adas_cog", category="ADAS-COG", tests=(
            TestMap("total", "ACTOT", "ADAS-Cog Total Score"),
        )),
    ),
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
        FormValue(code, "screening", "demographics", "sex", "2" if n != 1 else "1"),
        FormValue(code, "screening", "demographics", "age", (72, 93, 68)[n]),
    ]


def _ae(code: str, repeat: int, **values: object) -> list[FormValue]:
    return [FormValue(code, "week12", "adverse_events", k, v, repeat=repeat)  # type: ignore[arg-type]
            for k, v in values.items()]


AE_VALUES = (
    *_ae("S001", 1, ae_term="Headache", ae_onset_on="2026-02-01", ae_severity="mild",
         ae_serious="0", ae_related="no", ae_end_on={"missing": "unknown"}),
    *_ae("S001", 2, ae_term="Eye strain", ae_onset_on="2026-02-09", ae_severity="moderate",
         ae_serious="0", ae_related="possible", ae_end_on="2026-02-12"),
    *_ae("S002", 1, ae_term="Fall", ae_onset_on="2026-03", ae_severity="severe",
         ae_serious="1", ae_related="no", ae_end_on="2026-03-20"),
)
EOS_VALUES = (
    FormValue("S002", "week12", "end_of_study", "eos_on", "2026-07-01"),
    FormValue("S002", "week12", "end_of_study", "eos_status", "completed"),
    FormValue("S003", "week12", "end_of_study", "eos_on", "2026-03-02"),
    FormValue("S003", "week12", "end_of_study", "eos_status", "withdrew"),
)


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
    values = (*(v for n, s in enumerate(subjects) for v in _values(s.subject_code, n)),
              *AE_VALUES, *EOS_VALUES)
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
        sites=(SiteInfo("BJ01", "北京协和医院", "CHN"),
               SiteInfo("SH01", "Shanghai Ruijin Hospital", "CHN")),
        subjects=subjects,
        values=values,
        exported_at=EXPORTED_AT,
        audit=audit,
        signatures=signatures,
        cdisc=CDISC,
        visit_dates=tuple(
            VisitDate(s.subject_code, visit, on) for s in subjects
            for visit, on in (("screening", date(2026, 1, 5)), ("week12", date(2026, 4, 1)))
        ),
        device_values=tuple(
            DeviceValue(s.subject_code, "app_minutes",
                        datetime(2026, 1, 21 + day, 21, 0, tzinfo=UTC), minutes, "min")
            for s in subjects for day, minutes in ((0, 25.0), (1, 0.0), (2, 12.5))
        ),
    )


def unblinded() -> ExportData:
    return replace(make_export_data(), trial=replace(make_export_data().trial, blinded=False))
