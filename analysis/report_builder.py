"""Map SAP results onto the report engine: the ICH E3 section 10/14/16 layout of a
statistical analysis report, in English or Simplified Chinese. Pure: results + metadata in,
`ReportSpec` out.

Conventions (README "Report conventions"; `analysis.report.lint` checks the output):

- numbers: estimates, SEs and CI bounds with 3 decimals; a non-zero value that would round to
  zero is printed with two significant digits (-0.00045, never -0.000); a negative zero is 0;
- p-values: ``<0.001`` below 0.001, ``>0.999`` above 0.999, else 3 decimals; a p below 0.05
  that would round up to 0.050 keeps 4 decimals (0.0496), so rounding never crosses alpha;
- n (%): percent of the column's N with 1 decimal; mean (SD) with 2 decimals; a statistic that
  cannot be computed is said in words ("not estimable", "not reached"), never NA or blank;
- labels come from the protocol (arms, visits, fields, analysis sets, methods), never codes;
- tables and figures are numbered 1, 2, 3 … within their section with no gaps, each with
  footnotes naming its population, model, missing-data handling and source dataset
  (`TOPIC_DATASETS`, or the ADaM dataset the endpoint's result names).
"""

from __future__ import annotations

import datetime
import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from analysis.report import (
    ConsortArm,
    ConsortData,
    FigureBlock,
    ForestData,
    ForestRow,
    KaplanMeierData,
    ListingBlock,
    MeanChangeData,
    MeanChangeSeries,
    ReportSpec,
    Section,
    SurvivalCurve,
    TableBlock,
    TextBlock,
)
from analysis.report.phrases import translate
from analysis.report.spec import TOPIC_DATASETS
from analysis.sap import AnalysisResults, EndpointAnalysis
from protocols.model import Protocol

Language = Literal["en", "zh"]
PageSize = Literal["letter", "a4"]

GCP_FACTS = (
    "This report states only what the system records: the data snapshot, the database lock "
    "state and the software identified on this page. Whether the trial was conducted in "
    "accordance with ICH E6(R3) Good Clinical Practice is for the sponsor to state; this "
    "report does not assert it.",
    "本报告仅陈述系统记录的事实：本页所列的数据快照、数据库锁定状态和软件。试验是否按照 ICH "
    "E6(R3) 药物临床试验质量管理规范（GCP）实施由申办方声明，本报告不作此声明。",
)


#: the protocol's phase codes in the Chinese edition
PHASES_ZH = {"pilot": "预试验", "feasibility": "可行性研究", "pivotal": "关键性研究",
             "phase_1": "I 期", "phase_2": "II 期", "phase_3": "III 期", "phase_4": "IV 期",
             "na": "不适用"}
#: units written as words (a protocol's ``unit`` is one text); symbols (kg, mmol/mol, min)
#: stay as they are in the Chinese edition
UNITS_ZH = {"years": "年", "year": "年", "months": "月", "weeks": "周", "days": "天",
            "day": "天", "hours": "小时", "h/day": "小时/天", "min/day": "分钟/天",
            "minutes": "分钟", "times": "次", "score": "分", "points": "分"}
#: controlled discontinuation reasons (CDISC NCOMPLT wording) in the Chinese edition; any
#: other reason is data and printed as recorded
REASONS_ZH = {"withdrew consent": "撤回知情同意", "withdrawal by subject": "受试者退出",
              "lost to follow-up": "失访", "adverse event": "不良事件", "death": "死亡",
              "physician decision": "研究者决定", "protocol deviation": "方案偏离",
              "lack of efficacy": "疗效不佳", "pregnancy": "妊娠",
              "study terminated by sponsor": "申办方终止研究", "other": "其他"}


@dataclass(frozen=True)
class ReportMeta:
    """What the report says about the trial and its data besides the results.

    ``None`` means "not known": the report says so in words (never a default value).
    ``n_records``/``n_locked``/``last_locked_on`` describe the database lock state;
    ``first_consent_on``/``last_visit_on`` the study period as captured; ``signer`` names the
    instance's report-signing certificate (None: the instance has none).
    """

    generated_at: datetime.datetime
    data_sha256: str
    software_versions: Mapping[str, str]
    product_name: str | None
    product_version: str | None
    indication: str | None
    design: str
    sponsor: str | None
    phase: str
    cutoff_on: datetime.date | None
    source: str = "dtx-trials analysis run"
    first_consent_on: datetime.date | None = None
    last_visit_on: datetime.date | None = None
    n_records: int | None = None
    n_locked: int = 0
    last_locked_on: datetime.date | None = None
    language: Language = "en"
    page_size: PageSize = "letter"
    protocol: Protocol | None = None
    signer: str | None = None


def protocol_identity(protocol: Protocol, language: Language = "en") -> dict[str, str | None]:
    """Return the title-page facts a protocol declares (None: the protocol does not say)."""
    design = (
        f"randomized, {protocol.blinding.level}-blind, "
        f"{protocol.randomization.method.replace('_', ' ')}, "
        + ":".join(str(r) for r in protocol.reduced_ratio)
    )
    if language == "zh":
        blind = {"open": "开放", "single": "单盲", "double": "双盲"}[protocol.blinding.level]
        design = f"随机、{blind}，分配比例 " + ":".join(str(r) for r in protocol.reduced_ratio)
    phase = protocol.phase.replace("_", " ")
    if language == "zh":
        phase = PHASES_ZH.get(protocol.phase, phase)
    return {
        "sponsor": protocol.sponsor,
        "product_name": protocol.product.name.get(language) if protocol.product else None,
        "product_version": protocol.product.version if protocol.product else None,
        "indication": protocol.indication.get(language) if protocol.indication else None,
        "design": design,
        "phase": phase,
    }


def lint_vocabulary(protocol: Protocol) -> tuple[list[str], list[str]]:
    """Return (codes a cell must not print, the protocol's own label texts) for the lint."""
    codes = [a.code for a in protocol.arms] + [v.id for v in protocol.schedule.visits]
    texts: list[str] = [protocol.sponsor or "", *(a.name.zh or "" for a in protocol.arms)]
    if protocol.product is not None:
        texts += [protocol.product.name.en, protocol.product.name.zh or "",
                  protocol.product.version]
    for form in protocol.forms:
        for f in form.fields:
            texts += [f.label.en, f.label.zh or ""]
            if f.unit and f.unit not in UNITS_ZH:
                texts.append(f.unit)  # a symbol (kg, mmol/mol) stays in the Chinese edition
            for choice in f.choices or ():
                texts += [choice.label.en, choice.label.zh or ""]
    for stream in protocol.device_streams:
        texts += [stream.label.zh or "", stream.unit or ""]
    for endpoint in protocol.endpoints:
        texts.append(endpoint.name.zh or "")
        for sub in endpoint.analysis.subgroups:
            texts.append(sub.label.zh or "")
        for sens in endpoint.analysis.sensitivity:
            texts.append(sens.description.zh or "")
    for event in protocol.intercurrent_events:
        texts.append(event.description.zh or "")
    return codes, [t for t in texts if t]


# --- number formats --------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# the most decimals a tiny value is written with in fixed notation (0.00000012); smaller ones
# in scientific notation (2.8e-17), so that no value makes a number wider than a table's cell
_MOST_DECIMALS = 8


def fmt(value: Any, digits: int = 3, missing: str = "not estimable") -> str:
    """Format a number with ``digits`` decimals (never -0.000; tiny values keep 2 digits)."""
    number = _finite(value)
    if number is None:
        return missing
    text = f"{number:.{digits}f}"
    if float(text) == 0.0:
        if number == 0.0:
            return f"{0.0:.{digits}f}"
        # two significant digits, in fixed notation (-0.00045, 0.00000012) down to 1e-8, then
        # in scientific notation (2.8e-17: a model's estimate of a zero difference, say)
        decimals = 1 - math.floor(math.log10(abs(number)))
        if decimals > _MOST_DECIMALS:
            return f"{number:.1e}"
        return f"{number:.{decimals}f}"
    return text


def fmt_p(value: Any, missing: str = "not estimable") -> str:
    """Format a p-value: <0.001, >0.999, 3 decimals (4 when rounding would reach 0.050)."""
    p = _finite(value)
    if p is None:
        return missing
    if p < 0.001:
        return "<0.001"
    if p > 0.999:
        return ">0.999"
    text = f"{p:.3f}"
    if p < 0.05 <= float(text):
        return f"{p:.4f}"
    return text


def p_phrase(value: Any) -> str:
    """Return "p = 0.049" or "p < 0.001" for running text."""
    text = fmt_p(value)
    return f"p {text[0]} {text[1:]}" if text[0] in "<>" else f"p = {text}"


def n_pct(n: int, total: int | None) -> str:
    """Return "n (x.x%)" of ``total`` ("0" when there is nobody to count)."""
    if not total:
        return str(n)
    return f"{n} ({100 * n / total:.1f}%)"


def ci(low: Any, high: Any, digits: int = 3) -> str:
    return f"({fmt(low, digits, 'not estimable')}, {fmt(high, digits, 'not estimable')})"


# --- labels ----------------------------------------------------------------------------------

METHOD_LABELS: dict[str, tuple[str, str]] = {
    "ancova": ("ANCOVA", "协方差分析"),
    "mmrm": ("MMRM", "重复测量混合模型"),
    "logistic": ("logistic regression", "logistic 回归"),
    "risk_difference": ("risk difference", "率差"),
    "cmh": ("Cochran-Mantel-Haenszel", "CMH 检验"),
    "km_logrank": ("Kaplan-Meier and log-rank test", "Kaplan-Meier 法与 log-rank 检验"),
    "cox": ("Cox proportional hazards", "Cox 比例风险模型"),
    "gee_per_eye": ("GEE (per eye)", "广义估计方程（按眼）"),
    "random_intercept": ("random-intercept model", "随机截距模型"),
    "satterthwaite": ("t, Satterthwaite df", "t 分布，Satterthwaite 自由度"),
    "kenward_roger": ("t, Kenward-Roger df", "t 分布，Kenward-Roger 自由度"),
    "t": ("t", "t 分布"),
    "wald": ("Wald", "Wald"),
    "wald_robust": ("Wald, robust SE", "Wald，稳健标准误"),
    "wald_naive": ("Wald, model-based SE", "Wald，模型标准误"),
    "profile": ("profile likelihood", "轮廓似然"),
    "newcombe": ("Newcombe", "Newcombe"),
    "newcombe_hybrid_score": ("Newcombe hybrid score", "Newcombe 混合得分"),
    "firth_profile_penalized_likelihood": ("Firth penalized profile likelihood",
                                           "Firth 惩罚轮廓似然"),
    "profile_likelihood": ("profile likelihood", "轮廓似然"),
    "robins_breslow_greenland": ("Robins-Breslow-Greenland", "Robins-Breslow-Greenland"),
    "rubin_t": ("t, Rubin's rules", "t 分布，Rubin 规则"),
    "sato": ("Sato", "Sato"),
    "t_containment": ("t, containment df", "t 分布，包含法自由度"),
    "logrank": ("log-rank test", "log-rank 检验"),
    "stratified_logrank": ("stratified log-rank test", "分层 log-rank 检验"),
    "complete_case": ("complete cases", "完整病例"),
    "multiple_imputation_mar": ("multiple imputation (MAR)", "多重插补（随机缺失）"),
    "reference_based_mi": ("reference-based multiple imputation", "基于参照组的多重插补"),
    "tipping_point": ("tipping-point analysis", "临界点分析"),
    "per_protocol": ("per-protocol set", "符合方案集"),
    "alternative_model": ("alternative model", "替代模型"),
    "other": ("other", "其他"),
    "treatment_policy": ("treatment policy", "疗法策略"),
    "hypothetical": ("hypothetical", "假设策略"),
    "composite": ("composite", "复合策略"),
    "while_on_treatment": ("while on treatment", "治疗期间策略"),
    "principal_stratum": ("principal stratum", "主分层策略"),
    "fixed_sequence": ("fixed sequence (hierarchical)", "固定顺序（分层）检验"),
    "holm": ("Holm step-down", "Holm 逐步降低法"),
    "hochberg": ("Hochberg step-up", "Hochberg 逐步升高法"),
    "bonferroni": ("Bonferroni (weighted when weights are given)", "Bonferroni（给定权重时加权）"),
    "graphical": ("graphical procedure (Bretz et al. 2009)", "图形法（Bretz 等 2009）"),
    "j2r": ("jump to reference", "跳至参照组"),
    "mar": ("missing at random", "随机缺失"),
}

SET_LABELS: dict[str, tuple[str, str, str, str]] = {
    # code: (en label, zh label, en definition, zh definition)
    "fas": ("Full analysis set", "全分析集",
            "all randomized participants, analysed as randomized (ICH E9 5.2.1)",
            "所有随机化的受试者，按随机分组分析（ICH E9 5.2.1）"),
    "itt": ("Intention-to-treat set", "意向性治疗集",
            "all randomized participants, analysed as randomized",
            "所有随机化的受试者，按随机分组分析"),
    "per_protocol": ("Per-protocol set", "符合方案集",
                     "randomized participants who met the protocol's adherence rule, had no "
                     "recorded protocol deviation and did not withdraw",
                     "达到方案依从性规则、无记录的方案偏离且未退出的随机化受试者"),
    "safety": ("Safety set", "安全性分析集",
               "all randomized participants (every randomized participant is given the DTx), "
               "analysed as randomized",
               "所有随机化的受试者（每位随机化受试者均获得数字疗法应用），按随机分组分析"),
    "completers": ("Completers set", "完成者分析集",
                   "randomized participants with every analysed visit",
                   "完成所有分析访视的随机化受试者"),
}

SNAKE = re.compile(r"\b[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+\b")


class Labels:
    """Protocol labels in the report's language, and the report's own fixed phrases."""

    def __init__(self, results: AnalysisResults, protocol: Protocol | None,
                 language: Language) -> None:
        self.lang = language
        self.zh = language == "zh"
        self.results = results
        self.protocol = protocol
        self.arm_names: dict[str, str] = {}
        for arm in results.arms:
            name = str(arm["name"])
            if self.zh:
                name = str(arm.get("name_zh") or name)
                if results.review == "pooled":
                    name = "全体受试者（合并）"
            self.arm_names[str(arm["label"])] = name
        self.ids: dict[str, str] = {}
        self.recorded_texts: set[str] = set()
        self.visits: dict[str, str] = {}
        self.fields: dict[str, str] = {}
        self.choices: dict[tuple[str, str], str] = {}
        if protocol is not None:
            for visit in protocol.schedule.visits:
                self.visits[visit.id] = visit.label.get(language)
            for form in protocol.forms:
                for f in form.fields:
                    unit = UNITS_ZH.get(f.unit, f.unit) if self.zh and f.unit else f.unit
                    self.fields[f.id] = f.label.get(language) + (f" ({unit})" if unit else "")
                    for choice in f.choices or ():
                        self.choices[(f.id, choice.code)] = choice.label.get(language)
            for factor in protocol.randomization.factors:
                self.ids[factor.id] = factor.label.get(language)
            for event in protocol.intercurrent_events:
                self.ids[event.id] = event.description.get(language)
            for endpoint in protocol.endpoints:
                self.ids[endpoint.id] = endpoint.name.get(language)
                for sub in endpoint.analysis.subgroups:
                    self.ids[f"subgroup_{sub.id}"] = sub.label.get(language)
                for sens in endpoint.analysis.sensitivity:
                    self.ids.setdefault(sens.id, sens.description.get(language))
            self.ids.update({k: v.split(" (")[0] for k, v in self.fields.items()})
            self.ids.update(self.visits)
        self.ids.update({k: v[1 if self.zh else 0] for k, v in METHOD_LABELS.items()})
        self.ids.update({k: v[1 if self.zh else 0] for k, v in SET_LABELS.items()})

    def t(self, en: str, zh: str) -> str:
        """Return the fixed phrase in the report's language."""
        return zh if self.zh else en

    def arm(self, code: str) -> str:
        return self.arm_names.get(code, code)

    def contrast(self, text: str) -> str:
        """Return "A vs B" for an estimator's "a - b" / "a / b" contrast of arm labels."""
        for sep in (" - ", " / "):
            if sep in text:
                a, b = text.split(sep, 1)
                return f"{self.arm(a)} {self.t('vs', '对比')} {self.arm(b)}"
        return self.arm(text)

    def visit(self, visit_id: Any) -> str:
        if visit_id in (None, ""):
            return ""
        return self.visits.get(str(visit_id), self.humanize(str(visit_id)))

    def method(self, code: Any) -> str:
        pair = METHOD_LABELS.get(str(code))
        return pair[1 if self.zh else 0] if pair else self.humanize(str(code))

    def set_label(self, code: str) -> str:
        entry = SET_LABELS.get(code)
        return (entry[1] if self.zh else entry[0]) if entry else self.humanize(code)

    def set_definition(self, code: str) -> str:
        entry = SET_LABELS.get(code)
        return (entry[3] if self.zh else entry[2]) if entry else self.humanize(code)

    def reason(self, text: str) -> str:
        """A discontinuation reason: a controlled term in the report's language, any other
        text as recorded (it is data; the lint is told so)."""
        if self.zh and text.strip().lower() in REASONS_ZH:
            return REASONS_ZH[text.strip().lower()]
        return self.recorded(text)

    def error(self, text: str) -> str:
        """Why an analysis did not run: the analysis's own message (labels for codes), in
        Chinese where `analysis.report.phrases` knows it; a message it does not know is
        printed as the analysis gave it (a run must not fail for an unforeseen message)."""
        text = self.humanize(text)
        return self.recorded(translate(text)) if self.zh else text

    def recorded(self, text: str) -> str:
        """Mark ``text`` as data printed as recorded (verbatim terms, reasons) and return it."""
        self.recorded_texts.add(text.strip())
        return text

    def field(self, field_id: str, fallback: str) -> str:
        return self.fields.get(field_id, fallback)

    def choice(self, field_id: str, code: str, fallback: str) -> str:
        return self.choices.get((field_id, code), fallback)

    def humanize(self, text: str) -> str:
        """Replace protocol ids and method codes inside free text with their labels."""

        def swap(match: re.Match[str]) -> str:
            # only code-like words (snake_case) are ids: plain words such as "baseline" or
            # "site" stay as written even when a visit or field has that id
            word = match.group(0)
            if not SNAKE.fullmatch(word):
                return word
            if word in self.ids:
                return self.ids[word]
            return word.replace("_", " ")

        return re.sub(r"\b[A-Za-z][A-Za-z0-9_]*\b", swap, text)


# --- numbering -------------------------------------------------------------------------------


@dataclass
class Numbering:
    """Continuous table/figure/listing numbers within a section: 14.2.1, 14.2.2, …"""

    prefix: str
    counts: Counter[str] = field(default_factory=Counter)

    def next(self, kind: str) -> str:
        self.counts[kind] += 1
        return f"{self.prefix}.{self.counts[kind]}"


def _table(numbers: Numbering, title: str, population: str, n: int,
           columns: Sequence[str], rows: Sequence[Sequence[str]],
           footnotes: Sequence[str], source: str) -> TableBlock:
    return TableBlock(numbers.next("table"), title, population, n, tuple(columns),
                      tuple(tuple(r) for r in rows), tuple(footnotes), source)


def _listing(numbers: Numbering, title: str, population: str, n: int,
             columns: Sequence[str], rows: Sequence[Sequence[str]],
             footnotes: Sequence[str], source: str) -> ListingBlock:
    return ListingBlock(numbers.next("listing"), title, population, n, tuple(columns),
                        tuple(tuple(r) for r in rows), tuple(footnotes), source)


class Builder:
    """One report: the results, the metadata and the labels, laid out section by section."""

    def __init__(self, results: AnalysisResults, meta: ReportMeta) -> None:
        self.results = results
        self.meta = meta
        self.L = Labels(results, meta.protocol, meta.language)
        self.arms = [str(a["label"]) for a in results.arms
                     if str(a["label"]) in results.disposition["arms"]]
        self.not_run: list[tuple[str, str, str]] = []  # (endpoint, analysis, reason)

    # shared pieces ------------------------------------------------------------------------

    def source(self, topic: str) -> str:
        """The source footnote of a table on a fixed topic or on an endpoint (by its id)."""
        run = self.meta.generated_at.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        dataset = TOPIC_DATASETS.get(topic) or self.results.endpoint(topic).source_dataset
        where = f"{dataset}{self.L.t('; ', '；')}" if dataset else ""
        return self.L.t(f"{where}{self.meta.source}; run {run}",
                        f"{where}{self.meta.source}；运行于 {run}")

    def n_randomized(self) -> int:
        return int(self.results.disposition["randomized"])

    def set_n(self, code: str) -> int:
        d = self.results.disposition["arms"]
        if code in ("fas", "itt"):
            return self.n_randomized()
        return sum(int(d[a].get("analysis_sets", {}).get(code, d[a]["allocated"]))
                   for a in self.arms)

    def arm_header(self, n_by_arm: Mapping[str, int]) -> list[str]:
        return [f"{self.L.arm(a)} (N={n_by_arm.get(a, 0)})" for a in self.arms]

    def population_note(self, code: str) -> str:
        return self.L.t("Population: ", "分析人群：") + (
            f"{self.L.set_label(code)}, {self.L.set_definition(code)}."
            if not self.L.zh else f"{self.L.set_label(code)}：{self.L.set_definition(code)}。"
        )

    # title-page facts ---------------------------------------------------------------------

    def data_status(self) -> tuple[str, bool]:
        m, L = self.meta, self.L
        if m.n_records is None:
            return L.t("lock state not known to this build (no database)",
                       "本次生成未获得锁定状态（无数据库）"), True
        on = f" {L.t('on', '于')} {m.last_locked_on.isoformat()}" if m.last_locked_on else ""
        locked = m.n_records > 0 and m.n_locked == m.n_records
        text = L.t(f"records locked: {m.n_locked:,} of {m.n_records:,}{on}",
                   f"已锁定记录：{m.n_locked:,} / {m.n_records:,}{on}")
        if not locked:
            text += L.t("; data NOT locked: interim/draft report",
                        "；数据未锁定：期中/草稿报告")
        return text, not locked

    def signature_status(self, is_draft: bool) -> str:
        """Say whether the report is signed: only the final report (unblinded, every record
        locked) is, after rendering, by the instance's report-signing key."""
        L, signer = self.L, self.meta.signer
        if self.results.blinded or is_draft:
            why = L.t("blinded", "设盲") if self.results.blinded else L.t("data not locked",
                                                                          "数据未锁定")
            return L.t(f"none: only the final report (unblinded, every record locked) is signed; "
                       f"this report is {why}",
                       f"无：仅最终报告（非设盲且全部记录已锁定）签名；本报告{why}")
        if signer is None:
            return L.t("NOT signed: this instance has no report-signing key (dtx report init-key)",
                       "未签名：本实例没有报告签名密钥（dtx report init-key）")
        return L.t(f"PAdES digital signature of this file by {signer}; check it with "
                   f"dtx report verify",
                   f"本文件带有 PAdES 数字签名，签名者 {signer}；可用 dtx report verify 核验")

    # sections -----------------------------------------------------------------------------

    def disposition(self) -> Section:
        L, d = self.L, self.results.disposition
        numbers = Numbering("10")
        arms = d["arms"]
        n_by_arm = {a: int(arms[a]["allocated"]) for a in self.arms}
        total = sum(n_by_arm.values())
        columns = ["", *self.arm_header(n_by_arm), f"{L.t('Total', '合计')} (N={total})"]

        def row(label: str, values: Mapping[str, int]) -> tuple[str, ...]:
            return (label, *(n_pct(int(values.get(a, 0)), n_by_arm[a]) for a in self.arms),
                    n_pct(sum(int(values.get(a, 0)) for a in self.arms), total))

        received_label = L.t("Received the allocated DTx (recorded use)",
                             "接受分配的数字疗法（有使用记录）")
        rows = [
            row(L.t("Randomized", "随机化"), n_by_arm),
            row(received_label, {a: int(arms[a]["received"]) for a in self.arms})
            if all(arms[a]["received"] is not None for a in self.arms) else
            # no DTx-use stream in the protocol: use is not recorded, never assumed
            (received_label, *[L.t("not recorded", "未记录")] * (len(self.arms) + 1)),
            row(L.t("Completed the study", "完成研究"),
                {a: int(arms[a]["completed"]) for a in self.arms}),
            row(L.t("Ongoing (in follow-up at the data cut-off)", "仍在随访（数据截止时）"),
                {a: int(arms[a]["ongoing"]) for a in self.arms}),
            row(L.t("Discontinued the study", "中止研究"),
                {a: int(arms[a]["discontinued"]) + int(arms[a]["lost_to_follow_up"])
                 for a in self.arms}),
        ]
        reasons: dict[str, dict[str, int]] = defaultdict(dict)
        for a in self.arms:
            for reason, count in arms[a]["discontinued_reasons"].items():
                reasons[L.reason(str(reason))][a] = int(count)
            if arms[a]["lost_to_follow_up"]:
                reasons[L.t("lost to follow-up", "失访")][a] = int(arms[a]["lost_to_follow_up"])
        for reason in sorted(reasons):
            rows.append(row(f"   {reason}", reasons[reason]))
        for event_id, event_text in d.get("intercurrent_event_labels", {}).items():
            label = L.ids.get(event_id, str(event_text))
            rows.append(row(L.t("Intercurrent event: ", "伴发事件：") + label,
                            {a: arms[a].get("intercurrent_events", {}).get(event_id, 0)
                             for a in self.arms}))
        start = self.meta.first_consent_on
        last = self.meta.last_visit_on
        period = L.t(
            f"Recruitment and follow-up: first consent {start or 'not recorded'}, last visit "
            f"recorded {last or 'not recorded'}. The system records no decision to end the "
            "trial; this report covers the data captured up to "
            + (f"the cut-off {self.meta.cutoff_on}." if self.meta.cutoff_on else "the run."),
            f"招募与随访：首例知情同意 {start or '未记录'}，"
            f"最后一次访视 {last or '未记录'}。系统未记录终止"
            "试验的决定；本报告涵盖截至"
            + (f"截止日 {self.meta.cutoff_on} " if self.meta.cutoff_on else "本次运行")
            + "采集的数据。",
        )
        sets = ["fas", "per_protocol", "safety"]
        set_rows = [
            (L.set_label(code), L.set_definition(code),
             *(str(arms[a].get("analysis_sets", {}).get(code, arms[a]["allocated"]))
               for a in self.arms),
             str(sum(int(arms[a].get("analysis_sets", {}).get(code, arms[a]["allocated"]))
                     for a in self.arms)))
            for code in sets
        ]
        figure = FigureBlock(
            numbers.next("figure"), L.t("CONSORT 2010 flow diagram", "CONSORT 2010 流程图"),
            L.t("All screened participants", "全部筛选受试者"), int(d["assessed"]),
            self.consort(), source=self.source("subject_level"),
        )
        disposition = _table(
            numbers, L.t("Disposition of randomized participants", "随机化受试者的分布"),
            L.t("All randomized", "全部随机化受试者"), total, columns, rows,
            (L.t("Percentages of the arm's randomized participants. Reasons as recorded at "
                 "withdrawal.", "百分比以各组随机化人数为分母。原因按退出时记录。"),),
            self.source("subject_level"),
        )
        analysis_sets = _table(
            numbers, L.t("Analysis sets", "分析集"), L.t("All randomized", "全部随机化受试者"),
            total, [L.t("Analysis set", "分析集"), L.t("Definition", "定义"),
                    *self.arm_header(n_by_arm), L.t("Total", "合计")], set_rows,
            (L.t("Cells: participants in the set.", "单元格：该分析集的受试者人数。"),),
            self.source("subject_level"),
        )
        return Section("10", L.t("Study participants", "研究受试者"),
                       (TextBlock(period), figure, disposition, analysis_sets))

    def consort(self) -> ConsortData:
        d = self.results.disposition
        L = self.L
        arms = tuple(
            ConsortArm(
                label=L.arm(label),
                n_allocated=int(a["allocated"]),
                n_received=None if a["received"] is None else int(a["received"]),
                n_not_received=None if a["not_received"] is None else int(a["not_received"]),
                not_received_reasons={
                    L.t("no recorded use of the DTx", "无数字疗法使用记录"): int(a["not_received"])
                } if a["not_received"] else {},
                n_lost_to_follow_up=int(a["lost_to_follow_up"]),
                lost_reasons={L.t("lost to follow-up", "失访"): int(a["lost_to_follow_up"])}
                if a["lost_to_follow_up"] else {},
                n_discontinued=int(a["discontinued"]),
                discontinued_reasons={L.reason(str(k)): int(v)
                                      for k, v in a["discontinued_reasons"].items()},
                n_analysed=int(a["analysed"]),
                n_excluded_from_analysis=int(a["excluded_from_analysis"]),
                excluded_from_analysis_reasons={
                    L.t("primary outcome missing", "主要结局缺失"): int(a["excluded_from_analysis"])
                } if a["excluded_from_analysis"] else {},
            )
            for label, a in d["arms"].items()
        )
        return ConsortData(
            n_assessed=int(d["assessed"]), n_excluded=int(d["excluded"]),
            excluded_reasons={L.t(str(k), translate(str(k))): int(v)
                              for k, v in d["excluded_reasons"].items()},
            n_randomized=int(d["randomized"]), arms=arms,
        )

    def baseline(self) -> Section:
        L = self.L
        numbers = Numbering("14.1")
        arms = self.results.disposition["arms"]
        n_by_arm = {a: int(arms[a]["allocated"]) for a in self.arms}
        total = sum(n_by_arm.values())
        keys = [*self.arms, "Total"]
        columns = [L.t("Characteristic", "特征"), *self.arm_header(n_by_arm),
                   f"{L.t('Total', '合计')} (N={total})"]
        rows: list[tuple[str, ...]] = []
        last_field = None
        for row in self.results.baseline:
            cells = row["cells"]
            field_id = str(row.get("field", ""))
            if row["kind"] == "count":
                label_en = str(row["label"])
                head, _, choice_en = label_en.partition(": ")
                if field_id != last_field:
                    rows.append((L.field(field_id, head), *("" for _ in keys)))
                    last_field = field_id
                choice = L.choice(field_id, str(row.get("choice", "")), choice_en)
                rows.append((f"   {choice}",
                             *(n_pct(int(cells[k]["n"]), n_by_arm.get(k, total)) for k in keys)))
            else:
                last_field = field_id
                rows.append((L.field(field_id, str(row["label"])), *("" for _ in keys)))
                rows.append(("   n", *(str(cells[k]["n"]) for k in keys)))
                rows.append((L.t("   Mean (SD)", "   均值（标准差）"),
                             *(f"{fmt(cells[k]['mean'], 2, 'no data')} "
                               f"({fmt(cells[k]['sd'], 2, 'not estimable')})"
                               if cells[k]["n"] else L.t("no data", "无数据") for k in keys)))
                rows.append((L.t("   Median", "   中位数"),
                             *(fmt(cells[k]["median"], 2) if cells[k]["n"]
                               else L.t("no data", "无数据") for k in keys)))
                rows.append((L.t("   Min, max", "   最小值，最大值"),
                             *(f"{fmt(cells[k]['min'], 2)}, {fmt(cells[k]['max'], 2)}"
                               if cells[k]["n"] else L.t("no data", "无数据") for k in keys)))
        table = _table(
            numbers, L.t("Demographic and baseline characteristics by arm",
                         "各组人口学和基线特征"),
            L.set_label("fas"), total, columns, rows,
            (self.population_note("fas"),
             L.t("Every variable the protocol collects before randomization; n (%) of the "
                 "column N for categories; n is the number with a value.",
                 "方案在随机化前采集的全部变量；分类变量为 n"
                 "（占列 N 的百分比）；n 为有数据的人数。")),
            self.source("subject_level"),
        )
        return Section("14.1", L.t("Demographic and baseline characteristics",
                                   "人口学和基线特征"), (table,))

    def efficacy(self) -> Section:
        L = self.L
        subsections: list[Section] = []
        for i, endpoint in enumerate(self.results.endpoints, start=1):
            subsections.append(self.endpoint(f"14.2.{i}", endpoint))
        blocks: list[Any] = list(subsections)
        k = len(subsections)
        if self.results.multiplicity:
            k += 1
            blocks.append(self.multiplicity(f"14.2.{k}"))
        k += 1
        numbers = Numbering(f"14.2.{k}")
        not_run_blocks: list[Any]
        if self.not_run:
            not_run_blocks = [_table(
                numbers, L.t("Pre-specified analyses that were not run", "未实施的预设分析"),
                L.set_label("fas"), self.n_randomized(),
                [L.t("Endpoint", "终点"), L.t("Analysis", "分析"), L.t("Reason", "原因")],
                self.not_run,
                (L.t("Every analysis the protocol pre-specifies is reported: a result table, "
                     "or a row here with the reason it was not run.",
                     "方案预设的每项分析均有报告：结果表，或在此列出未实施的原因。"),),
                self.source("subject_level"),
            )]
        else:
            not_run_blocks = [TextBlock(L.t("Every pre-specified analysis was run.",
                                            "全部预设分析均已实施。"))]
        blocks.append(Section(f"14.2.{k}", L.t("Pre-specified analyses not run",
                                               "未实施的预设分析"), tuple(not_run_blocks)))
        return Section("14.2", L.t("Efficacy", "有效性"), tuple(blocks))

    def endpoint(self, number: str, endpoint: EndpointAnalysis) -> Section:
        L = self.L
        numbers = Numbering(number)
        name = L.ids.get(endpoint.id, endpoint.name)
        if L.zh and endpoint.name_zh:
            name = endpoint.name_zh
        role = L.method(endpoint.role) if endpoint.role in METHOD_LABELS else {
            "primary": L.t("primary", "主要"), "key_secondary": L.t("key secondary", "关键次要"),
            "secondary": L.t("secondary", "次要"), "exploratory": L.t("exploratory", "探索性"),
            "safety": L.t("safety", "安全性"),
        }.get(endpoint.role, endpoint.role)
        title = f"{name} ({role})"
        population = endpoint.population
        pop_label = L.set_label(population)
        source = self.source(endpoint.id)
        blocks: list[Any] = [TextBlock(self.estimand_text(endpoint))]
        n_total = sum(endpoint.n_by_arm.values())
        if endpoint.error:
            self.not_run.append((name, L.t("primary analysis", "主要分析"),
                                 L.error(endpoint.error)))
            blocks.append(TextBlock(L.t("The analysis could not be run: ", "分析未能实施：")
                                    + L.error(endpoint.error)))
            return Section(number, title, tuple(blocks))
        result = endpoint.result or {}
        model_text = L.humanize(str(result.get("model", L.method(endpoint.model))))
        missing_text = L.humanize(
            str(endpoint.missing_data["handling"]) if endpoint.missing_data
            else L.t("censored at the last contact (time to event)", "在最后一次联系时"
                                                                     "删失（事件时间）")
            if endpoint.model in ("km_logrank", "cox")
            else L.t("excluded from the analysis", "不纳入分析")
        )
        notes = (
            self.population_note(population),
            L.t("Model: ", "模型：") + _sentence(model_text, L),
            L.t("Missing data: ", "缺失数据：") + _sentence(missing_text, L),
        )
        blocks.append(TextBlock(L.t("Model: ", "模型：") + model_text))
        pooled = result.get("pooled")
        if pooled:
            blocks.append(_table(
                numbers, f"{name}: " + L.t("all arms pooled (blinded data review)",
                                          "全部组合并（设盲数据审核）"),
                pop_label, n_total, [L.t("Statistic", "统计量"), L.t("Value", "数值")],
                [(L.t(*POOLED_STATISTICS[k]) if k in POOLED_STATISTICS else L.humanize(str(k)),
                  str(v) if isinstance(v, int) else fmt(v))
                 for k, v in pooled.items()],
                (*notes, L.t("Blinded data review (ICH E9 section 7.1): figures of the whole "
                             "trial; no comparison between groups.",
                             "设盲数据审核（ICH E9 第 7.1 节）：全试验数据，不进行组间比较。")),
                source,
            ))
        blocks.append(self.arm_summary(numbers, name, endpoint, result, pop_label, notes, source))
        if endpoint.intercurrent:
            blocks.append(self.intercurrent(numbers, name, endpoint, pop_label, source))
        if endpoint.headline is not None:
            h = endpoint.headline
            blocks.append(TextBlock(
                L.t("Primary result: ", "主要结果：") + f"{L.contrast(str(h['contrast']))} "
                + L.t("estimate ", "估计值 ") + fmt(h["estimate"])
                + f" (95% CI {fmt(h['ci_low'])}, {fmt(h['ci_high'])}), {p_phrase(h['p_value'])}."
            ))
        effects = list(result.get("effects", ()))
        if effects:
            blocks.append(self.effects_table(numbers, f"{name}: "
                                             + L.t("treatment effect", "治疗效应"),
                                             effects, pop_label, n_total, notes, source))
        for sup_name, supportive in endpoint.supportive.items():
            sup_effects = list(supportive.get("effects", ()))
            if sup_effects:
                blocks.append(self.effects_table(
                    numbers, f"{name}: " + L.t("supportive analysis", "支持性分析") + " ("
                    + L.method(sup_name) + ")", sup_effects, pop_label, n_total,
                    (*notes[:1], L.t("Model: ", "模型：")
                     + L.humanize(str(supportive.get("model", L.method(sup_name))))), source))
        if endpoint.model == "km_logrank":
            blocks.extend(self.km(numbers, name, result, pop_label, n_total, notes, source))
        blocks.extend(self.sensitivity(numbers, name, endpoint, pop_label, n_total, source))
        forest = self.forest(endpoint, name)
        if forest is not None:
            blocks.append(FigureBlock(
                numbers.next("figure"), f"{name}: " + L.t("subgroup forest plot (pre-specified)",
                                                         "亚组森林图（预设）"),
                pop_label, n_total, forest, (self.population_note(population),), source))
        mean_change = self.mean_change(endpoint)
        if mean_change is not None:
            blocks.append(FigureBlock(
                numbers.next("figure"), f"{name}: " + L.t("mean over time by arm",
                                                         "各组随时间的均值"),
                pop_label, n_total, mean_change, (self.population_note(population),), source))
        return Section(number, title, tuple(blocks))

    def estimand_text(self, endpoint: EndpointAnalysis) -> str:
        L, e = self.L, endpoint.estimand
        protocol_endpoint = None
        if self.meta.protocol is not None:
            protocol_endpoint = next((x for x in self.meta.protocol.endpoints
                                      if x.id == endpoint.id), None)
        population = str(e.get("population"))
        variable = str(e.get("variable"))
        summary = str(e.get("summary"))
        if protocol_endpoint is not None:
            est = protocol_endpoint.estimand
            population = est.population.get(L.lang)
            variable = est.variable.get(L.lang)
            summary = est.summary.get(L.lang)
        events = "; ".join(
            f"{L.ids.get(str(ie['event']), str(ie.get('description') or ie['event']))}: "
            f"{L.method(ie['strategy'])}"
            + (f" ({L.t('outcome set to', '结局设为')} {fmt(ie['composite_value'], 2)})"
               if ie.get("composite_value") is not None else "")
            for ie in e.get("intercurrent_events", [])
        ) or L.t("none", "无")
        reference = self.results.reference_arm
        treatment = " / ".join(L.arm(a) for a in endpoint.n_by_arm) + (
            f" ({L.t('reference', '参照')}: {L.arm(reference)})"
            if reference and reference in endpoint.n_by_arm else "")
        return L.t(
            f"Estimand. Population: {population}. Variable: {variable}. Treatment: "
            f"{treatment}. Intercurrent events: {events}. Population-level summary: {summary}. "
            f"Analysis set: {L.set_label(str(e.get('analysis_set')))}.",
            f"估计目标。人群：{population}。变量：{variable}。治疗：{treatment}。伴发事件：{events}。"
            f"群体层面汇总：{summary}。分析集：{L.set_label(str(e.get('analysis_set')))}。",
        )

    def arm_summary(self, numbers: Numbering, name: str, endpoint: EndpointAnalysis,
                    result: Mapping[str, Any], population: str, notes: Sequence[str],
                    source: str) -> TableBlock:
        L = self.L
        arms = list(endpoint.n_by_arm)
        ls_means = {(str(x["arm"]), x.get("visit")): x for x in result.get("ls_means", ())}
        observed = {(str(x["arm"]), x.get("visit")): x for x in result.get("arms", ())}
        final_visit = None
        visits = [x.get("visit") for x in result.get("arms", ()) if x.get("visit")]
        if visits:
            final_visit = visits[-1]
        columns = [L.t("Arm", "组别"), L.t("N in analysis set", "分析集 N"),
                   L.t("Missing outcome", "结局缺失"), L.t("N analysed", "分析 N")]
        rows: list[tuple[str, ...]] = []
        model = endpoint.model
        if model in ("km_logrank", "cox"):
            events = result.get("events_by_arm", {})
            columns += [L.t("Events", "事件数")]
            for a in arms:
                n = int(endpoint.n_by_arm[a])
                rows.append((L.arm(a), str(n), str(endpoint.n_missing_by_arm.get(a, 0)),
                             str(n - int(endpoint.n_missing_by_arm.get(a, 0))),
                             n_pct(int(events[a]), n) if a in events
                             else L.t("see the Kaplan-Meier table", "见 Kaplan-Meier 表")))
        elif not observed and not ls_means:
            for a in arms:
                n = int(endpoint.n_by_arm[a])
                missing = int(endpoint.n_missing_by_arm.get(a, 0))
                rows.append((L.arm(a), str(n), str(missing), str(n - missing)))
        else:
            binary = model in ("logistic", "risk_difference", "cmh")
            columns += [L.t("Responders, n (%)", "应答者 n (%)") if binary
                        else L.t("Observed mean (SD)", "观察均值（标准差）"),
                        L.t("LS mean (95% CI)", "最小二乘均值 (95% CI)") if not binary
                        else L.t("Model estimate (95% CI)", "模型估计 (95% CI)")]
            for a in arms:
                n = int(endpoint.n_by_arm[a])
                missing = int(endpoint.n_missing_by_arm.get(a, 0))
                obs = observed.get((a, final_visit)) or observed.get((a, None)) or {}
                if binary:
                    n_obs = int(obs.get("n") or 0)
                    responders = obs.get("n_events")
                    if responders is None and obs.get("proportion") is not None:
                        responders = round(float(obs["proportion"]) * n_obs)
                    summary = (n_pct(int(responders), n_obs) if responders is not None
                               else L.t("not estimable", "无法估计"))
                else:
                    summary = (f"{fmt(obs.get('mean'), 2)} ({fmt(obs.get('sd'), 2)})"
                               if obs else L.t("no data", "无数据"))
                lsm = ls_means.get((a, final_visit)) or ls_means.get((a, None))
                estimate = (f"{fmt(lsm['estimate'])} {ci(lsm.get('ci_low'), lsm.get('ci_high'))}"
                            if lsm else L.t("not estimated by this model", "本模型未估计"))
                rows.append((L.arm(a), str(n), str(missing), str(n - missing), summary,
                             estimate))
        visit_note = (L.t("Observed and model estimates at ", "观察值和模型估计为 ")
                      + L.visit(final_visit) + L.t(".", "时。")) if final_visit else ""
        return _table(numbers, f"{name}: " + L.t("participants analysed and summary by arm",
                                                "各组分析人数与汇总"),
                      population, sum(endpoint.n_by_arm.values()), columns, rows,
                      (*notes, *([visit_note] if visit_note else [])), source)

    def effects_table(self, numbers: Numbering, title: str,
                      effects: Sequence[Mapping[str, Any]], population: str, n: int,
                      notes: Sequence[str], source: str) -> TableBlock:
        L = self.L
        has_visit = any(e.get("visit") for e in effects)
        scale = str(effects[0].get("scale") or "difference")
        scale_label = {
            "difference": L.t("Difference", "差值"), "odds_ratio": L.t("Odds ratio", "比值比"),
            "hazard_ratio": L.t("Hazard ratio", "风险比"),
            "risk_difference": L.t("Risk difference", "率差"),
        }.get(scale, L.humanize(scale))
        columns = [L.t("Comparison", "比较"), *([L.t("Visit", "访视")] if has_visit else []),
                   scale_label, "SE", "95% CI", "p", L.t("CI method", "置信区间方法")]
        rows = [
            (L.contrast(str(e.get("contrast"))),
             *([L.visit(e.get("visit")) or L.t("overall", "总体")] if has_visit else []),
             fmt(e.get("estimate")), fmt(e.get("se")), ci(e.get("ci_low"), e.get("ci_high")),
             fmt_p(e.get("p_value")), L.method(e.get("ci_method") or "wald"))
            for e in effects
        ]
        return _table(numbers, title, population, n, columns, rows,
                      (*notes, L.t("p-values two-sided; <0.001 printed for p below 0.001.",
                                   "双侧 p 值；p 小于 0.001 记为 <0.001。")), source)

    def intercurrent(self, numbers: Numbering, name: str, endpoint: EndpointAnalysis,
                     population: str, source: str) -> TableBlock:
        L = self.L
        arms = list(endpoint.n_by_arm)
        rows = [
            (L.ids.get(str(ie["event"]), str(ie["description"])), L.humanize(str(ie["detection"])),
             L.method(ie["strategy"]),
             *(f"{ie['n_with_event'].get(a, 0)} / {ie['n_affected'].get(a, 0)}" for a in arms))
            for ie in endpoint.intercurrent
        ]
        notes = [f"{L.method(ie['strategy'])}: {L.humanize(str(ie['handling']))}."
                 for ie in endpoint.intercurrent]
        return _table(
            numbers, f"{name}: " + L.t("intercurrent events and strategies", "伴发事件及"
                                                                             "其处理策略"),
            population, sum(endpoint.n_by_arm.values()),
            [L.t("Event", "事件"), L.t("Detected from", "识别依据"), L.t("Strategy", "策略"),
             *(L.arm(a) for a in arms)], rows,
            (*dict.fromkeys(notes),
             L.t("Cells: participants with the event / participants whose analysed data the "
                 "strategy changed.", "单元格：发生事件的受试者数 / "
                                      "其分析数据被策略改变的受试者数。")),
            source,
        )

    def km(self, numbers: Numbering, name: str, result: Mapping[str, Any], population: str,
           n_total: int, notes: Sequence[str], source: str) -> list[Any]:
        L = self.L
        curves = result.get("curves", ())
        blocks: list[Any] = []
        not_reached = L.t("not reached", "未达到")
        events = result.get("events_by_arm", {})
        rows = [
            (L.arm(str(m["arm"])), str(events.get(str(m["arm"]), L.t("not counted", "未计数"))),
             fmt(m.get("median"), 1, not_reached),
             f"({fmt(m.get('ci_low'), 1, not_reached)}, {fmt(m.get('ci_high'), 1, not_reached)})")
            for m in result.get("medians", ())
        ]
        blocks.append(_table(
            numbers, f"{name}: " + L.t("events and median time to event", "事件数与中位事件时间"),
            population, n_total,
            [L.t("Arm", "组别"), L.t("Events", "事件数"), L.t("Median (days)", "中位数（天）"),
             "95% CI"], rows,
            (*notes, L.t("Not reached: the Kaplan-Meier estimate (or its confidence bound) stays "
                         "above 0.5 up to the last follow-up.",
                         "未达到：Kaplan-Meier 估计（或其置信限）在最后随访前始终高于 0.5。")),
            source))
        tests = [(L.method(t["name"]), fmt(t["statistic"]), fmt(t.get("df"), 0),
                  fmt_p(t["p_value"])) for t in result.get("tests", ())]
        if tests:
            blocks.append(_table(
                numbers, f"{name}: " + L.t("log-rank tests", "log-rank 检验"), population, n_total,
                [L.t("Test", "检验"), L.t("Chi-square", "卡方"), "df", "p"], tests, notes, source))
        if curves:
            longest = max((max(c["time"]) if c["time"] else 0.0) for c in curves)
            risk_times = tuple(round(longest * k / 4, 1) for k in range(5))
            drawn = []
            for c in curves:
                at_risk = []
                for t in risk_times:
                    later = [n for time, n in zip(c["time"], c["n_at_risk"], strict=True)
                             if time >= t]
                    at_risk.append(later[0] if later else 0)
                drawn.append(SurvivalCurve(label=L.arm(str(c["arm"])), times=tuple(c["time"]),
                                           survival=tuple(c["survival"]),
                                           at_risk=tuple(at_risk)))
            blocks.append(FigureBlock(
                numbers.next("figure"), f"{name}: " + L.t("Kaplan-Meier estimate",
                                                         "Kaplan-Meier 估计"),
                population, n_total,
                KaplanMeierData(tuple(drawn), risk_times,
                                time_label=L.t("Time (days)", "时间（天）"),
                                survival_label=L.t("Probability of no event", "无事件概率")),
                tuple(notes[:1]), source))
        return blocks

    def sensitivity(self, numbers: Numbering, name: str, endpoint: EndpointAnalysis,
                    population: str, n_total: int, source: str) -> list[Any]:
        L = self.L
        same: list[tuple[str, ...]] = []
        supplementary: list[tuple[str, ...]] = []
        for s in endpoint.sensitivity:
            label = L.ids.get(str(s["id"]), str(s.get("description") or s["id"]))
            if s.get("status") == "not_run":
                self.not_run.append((name, f"{label} ({L.method(s['method'])})",
                                     L.error(str(s.get("note", "")))))
                continue
            target = supplementary if s.get("supplementary") else same
            effects = [e for e in s.get("effects", ()) if e is not None]
            for eff in effects[:9]:
                row_label = label + (
                    f" ({L.t('delta', 'δ')} {fmt(eff.get('delta'), 2)})"
                    if "delta" in eff and s["method"] == "tipping_point" else "")
                target.append((row_label, L.method(s["method"]),
                               L.contrast(str(eff.get("contrast", ""))), fmt(eff.get("estimate")),
                               ci(eff.get("ci_low"), eff.get("ci_high")),
                               fmt_p(eff.get("p_value"))))
        columns = [L.t("Analysis", "分析"), L.t("Method", "方法"), L.t("Comparison", "比较"),
                   L.t("Estimate", "估计值"), "95% CI", "p"]
        blocks: list[Any] = []
        if same:
            blocks.append(_table(
                numbers, f"{name}: " + L.t("sensitivity analyses (same estimand)",
                                          "敏感性分析（同一估计目标）"),
                population, n_total, columns, same,
                (self.population_note(endpoint.population),
                 L.t("Sensitivity analyses target the primary estimand under other assumptions "
                     "about missing data (ICH E9(R1) A.5.2).",
                     "敏感性分析在不同缺失数据假设下针对主要估计目标（ICH E9(R1) A.5.2）。")),
                source))
        if supplementary:
            blocks.append(_table(
                numbers, f"{name}: " + L.t("supplementary analyses (other estimands)",
                                          "补充分析（其他估计目标）"),
                population, n_total, columns, supplementary,
                (L.t("Supplementary analyses target another estimand (another population or "
                     "intercurrent-event strategy, ICH E9(R1) A.5.3); each row's analysis names "
                     "it.", "补充分析针对其他估计目标（其他人群或伴发事件策略，ICH E9(R1) A.5.3）；"
                     "各行的分析名称注明其目标。"),),
                source))
        return blocks

    def forest(self, endpoint: EndpointAnalysis, name: str) -> ForestData | None:
        L = self.L
        rows: list[ForestRow] = []
        for subgroup in endpoint.subgroups:
            label = L.ids.get(f"subgroup_{subgroup.get('id')}", str(subgroup.get("label")))
            if subgroup.get("status") == "not_run":
                self.not_run.append((name, L.t("subgroup: ", "亚组：") + label,
                                     L.error(str(subgroup.get("note", "")))))
                continue
            level_labels = subgroup.get("level_labels", {})
            interaction = subgroup.get("interaction", {}).get("p_value")
            level_names = self.subgroup_levels(endpoint.id, str(subgroup.get("id")))
            for level in subgroup.get("levels", ()):
                if not level["effects"]:
                    continue
                effect = level["effects"][0]
                if effect.get("ci_low") is None or effect.get("ci_high") is None:
                    continue
                rows.append(ForestRow(
                    subgroup=label,
                    level=level_names.get(level["level"],
                                          str(level_labels.get(level["level"], level["level"]))),
                    n=int(sum(level["n_by_arm"].values())),
                    estimate=float(effect["estimate"]), ci_low=float(effect["ci_low"]),
                    ci_high=float(effect["ci_high"]), interaction_p=interaction,
                ))
        if not rows:
            return None
        ratio = endpoint.model == "logistic"
        return ForestData(
            tuple(rows),
            estimate_label=L.t("Odds ratio (95% CI)", "比值比 (95% CI)") if ratio
            else L.t("Difference (95% CI)", "差值 (95% CI)"),
            null_value=1.0 if ratio else 0.0,
        )

    def subgroup_levels(self, endpoint_id: str, subgroup_id: str) -> dict[str, str]:
        if self.meta.protocol is None:
            return {}
        for endpoint in self.meta.protocol.endpoints:
            if endpoint.id == endpoint_id:
                for sub in endpoint.analysis.subgroups:
                    if sub.id == subgroup_id:
                        return {lv.code: lv.label.get(self.L.lang) for lv in sub.levels}
        return {}

    def mean_change(self, endpoint: EndpointAnalysis) -> MeanChangeData | None:
        by_arm: dict[str, list[Mapping[str, Any]]] = {}
        for row in endpoint.mean_by_visit:
            by_arm.setdefault(str(row["arm"]), []).append(row)
        if not by_arm or max(len(v) for v in by_arm.values()) < 2:
            return None
        series = []
        for arm, rows in sorted(by_arm.items()):
            rows = sorted(rows, key=lambda r: r.get("day") or 0)
            series.append(MeanChangeSeries(
                label=self.L.arm(arm),
                times=tuple(round((r.get("day") or 0) / 7, 1) for r in rows),
                means=tuple(float(r["mean"]) for r in rows),
                errors=tuple(1.96 * float(r["se"] or 0.0) for r in rows),
            ))
        L = self.L
        return MeanChangeData(
            tuple(series), time_label=L.t("Week", "周"),
            value_label=L.t("Mean change from baseline", "相对基线的平均变化"),
            error_label=L.t("Error bars: 95% CI", "误差线：95% CI"))

    def multiplicity(self, number: str) -> Section:
        L = self.L
        numbers = Numbering(number)
        m = self.results.multiplicity or {}
        result = m["result"]
        family = {f["id"]: f for f in m.get("family", ())}
        yes, no = L.t("yes", "是"), L.t("no", "否")

        def hypothesis(h: str) -> str:
            """A hypothesis by its endpoint's label (and its arm's, one per active arm)."""
            if h in L.ids:
                return L.ids[h]
            member = family.get(h) or {}
            endpoint = str(member.get("endpoint") or "")
            if endpoint not in L.ids:
                return h
            arm = member.get("arm")
            return f"{L.ids[endpoint]} ({L.arm(str(arm))})" if arm and h != endpoint \
                else L.ids[endpoint]

        rows = [
            (hypothesis(str(d["endpoint"])),
             L.contrast(str(family.get(d["endpoint"], {}).get("contrast") or ""))
             or L.t("all arms", "全部组"),
             fmt_p(d["p_value"]), fmt_p(d["adjusted_p_value"]),
             yes if d["rejected"] else no, yes if d["tested"] else no)
            for d in result["decisions"]
        ]
        order = ", ".join(hypothesis(str(o)) for o in m["order"])
        text = L.t(
            f"Procedure: {L.method(m['procedure'])}"
            f"{' (declared in the protocol)' if m.get('declared') else ''}; family-wise alpha "
            f"{m['alpha']}; family (in order): {order}.",
            f"方法：{L.method(m['procedure'])}{'（方案声明）' if m.get('declared') else ''}；"
            f"总体 α {m['alpha']}；检验族（按顺序）：{order}。",
        )
        if m.get("note") and not L.zh:
            text += f" {L.humanize(str(m['note']))}."
        n = self.n_randomized()
        blocks: list[Any] = [
            TextBlock(text),
            _table(numbers, L.t("Confirmatory family: adjusted p-values", "确证性检验族"
                                                                          "：校正 p 值"),
                   L.set_label("fas"), n,
                   [L.t("Hypothesis", "假设"), L.t("Comparison", "比较"), "p",
                    L.t("Adjusted p", "校正 p"), L.t("Rejected", "拒绝"), L.t("Tested", "已检验")],
                   rows, (self.population_note("fas"),
                          L.t("Multiplicity: ", "多重性：") + L.method(m["procedure"]) + "."),
                   self.source("subject_level")),
        ]
        path = result.get("path") or ()
        if path:
            steps = []
            for k, step in enumerate(path, start=1):
                levels = ", ".join(f"{hypothesis(h)} {fmt(a, 4)}"
                                   for h, a in step["levels"].items())
                action = (L.t("reject ", "拒绝 ") + hypothesis(step["rejected"])
                          if step["rejected"] else L.t("stop", "停止"))
                steps.append((str(k), levels, action))
            blocks.append(_table(
                numbers, L.t("Rejection path (local levels at each step)", "拒绝路径（每"
                                                                           "步局部水平）"),
                L.set_label("fas"), n,
                [L.t("Step", "步骤"), L.t("Local levels (weight × alpha)", "局部水平（权重 × α）"),
                 L.t("Action", "操作")], steps, (self.population_note("fas"),),
                self.source("subject_level")))
        return Section(number, L.t("Multiplicity", "多重性"), tuple(blocks))

    # safety -------------------------------------------------------------------------------

    def safety(self) -> Section:
        L = self.L
        s = self.results.safety
        n_by_arm = {a: int(s["n_by_arm"].get(a, 0)) for a in self.arms}
        n = sum(n_by_arm.values())
        head = ["", *self.arm_header(n_by_arm)]
        events = list(s.get("events", ()))
        fields = s.get("fields", {})
        pop = L.set_label("safety")
        note = self.population_note("safety")
        src = self.source("adverse_events")
        numbers = Numbering("14.3.1")

        def subjects(pred: Any) -> dict[str, set[str]]:
            out: dict[str, set[str]] = defaultdict(set)
            for e in events:
                if pred(e):
                    out[str(e["arm"])].add(str(e["subject"]))
            return out

        def count_row(label: str, groups: Mapping[str, set[str]]) -> tuple[str, ...]:
            return (label, *(n_pct(len(groups.get(a, set())), n_by_arm[a]) for a in self.arms))

        def ordered(role: str) -> list[tuple[str, str]]:
            info = fields.get(role) or {}
            return [(str(c[0]), str(c[2] if L.zh else c[1])) for c in info.get("choices", ())]

        def is_ae_withdrawal(e: Mapping[str, Any]) -> bool:
            return "adverse" in str(e.get("withdrawal_reason") or "").lower()

        def is_death(reason: Any) -> bool:
            text = str(reason or "").lower()
            return "death" in text or "died" in text

        related_codes = {c for c, _ in ordered("relationship")
                         if c not in ("not_related", "0", "unrelated", "none")}
        overview = [
            count_row(L.t("Any adverse event", "任何不良事件"), subjects(lambda e: True)),
        ]
        if "relationship" in fields:
            overview.append(count_row(L.t("Any adverse event related to the DTx (as assessed)",
                                          "任何与数字疗法有关的不良事件（按评估）"),
                                      subjects(lambda e: e.get("relationship") in related_codes)))
        if "serious" in fields:
            overview.append(count_row(L.t("Any serious adverse event", "任何严重不良事件"),
                                      subjects(lambda e: e.get("serious") == "1")))
        overview.append(count_row(L.t("Any adverse event leading to discontinuation",
                                      "任何导致中止的不良事件"), subjects(is_ae_withdrawal)))
        deaths = [w for w in s.get("withdrawals", ()) if is_death(w.get("reason"))]
        death_groups: dict[str, set[str]] = defaultdict(set)
        for w in deaths:
            death_groups[str(w["arm"])].add(str(w["subject"]))
        overview.append(count_row(L.t("Deaths", "死亡"), death_groups))
        not_collected = [L.t(role_en, role_zh) for role, role_en, role_zh in (
            ("severity", "severity", "严重程度"), ("relationship", "relationship", "相关性"),
            ("serious", "seriousness", "严重性"), ("outcome", "outcome", "转归"))
            if role not in fields]
        overview_notes = [note,
                          L.t("Participants with at least one event, n (%) of the arm's N. "
                              "Leading to discontinuation: the participant's withdrawal reason "
                              "names an adverse event. Deaths: withdrawal reason recorded as "
                              "death.", "至少发生一次事件的受试者，n（占"
                                        "该组 N 的百分比）。导致中止："
                              "受试者的退出原因提及不良事件。死亡：退出原因记录为死亡。")]
        if not_collected:
            overview_notes.append(L.t("Not collected on this protocol's AE form: ",
                                      "本方案不良事件表未采集：") + ", ".join(not_collected) + ".")
        blocks: list[Any] = [_table(numbers, L.t("Overview of adverse events", "不良事件概览"),
                                    pop, n, head, overview, overview_notes, src)]
        # by SOC / PT when coded; uncoded terms listed as such (never invented codes)
        uncoded = L.t("uncoded", "未编码")
        by_code: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for e in events:
            soc = str(e.get("soc") or uncoded)
            pt = str(e.get("pt") or "")
            term = L.recorded(pt) if e.get("pt") else (
                f"{L.recorded(str(e.get('term') or '').strip().lower())} ({uncoded})")
            L.recorded(soc)
            by_code[(soc, term)][str(e["arm"])].add(str(e["subject"]))
        soc_rows: list[tuple[str, ...]] = []
        for soc in sorted({k[0] for k in by_code}, key=lambda x: (x == uncoded, x)):
            soc_subjects: dict[str, set[str]] = defaultdict(set)
            for (s_, _), groups in by_code.items():
                if s_ == soc:
                    for a, subs in groups.items():
                        soc_subjects[a] |= subs
            soc_rows.append(count_row(soc, soc_subjects))
            terms = sorted((t for s_, t in by_code if s_ == soc),
                           key=lambda t: (-sum(len(v) for v in by_code[(soc, t)].values()), t))
            soc_rows += [count_row(f"   {t}", by_code[(soc, t)]) for t in terms]
        if not soc_rows:
            soc_rows = [(L.t("No adverse events recorded", "未记录不良事件"),
                         *("0" for _ in self.arms))]
        blocks.append(_table(
            numbers, L.t("Adverse events by system organ class and preferred term",
                         "按系统器官分类和首选术语的不良事件"), pop, n,
            [L.t("SOC / PT", "系统器官分类 / 首选术语"), *head[1:]], soc_rows,
            (note, L.t("SOC and PT as coded in the data with the sponsor's dictionary; terms "
                       "without a code are listed as reported and marked uncoded.",
                       "系统器官分类和首选术语取自数据中按申办方词典的编码；未编码的术语按报告原文列出并标注"
                       "未编码。")), src))
        for role, title_en, title_zh in (
            ("severity", "Adverse events by maximum severity", "按最高严重程度的不良事件"),
            ("relationship", "Adverse events by strongest relationship to the DTx",
             "按与数字疗法最强相关性的不良事件"),
        ):
            if role not in fields:
                continue
            scale = ordered(role)
            rank = {code: i for i, (code, _) in enumerate(scale)}
            worst: dict[tuple[str, str], int] = {}
            for e in events:
                value = e.get(role)
                if value not in rank:
                    continue
                key = (str(e["arm"]), str(e["subject"]))
                worst[key] = max(worst.get(key, -1), rank[value])
            rows = []
            for i, (_, label) in enumerate(scale):
                at_level: dict[str, set[str]] = defaultdict(set)
                for (arm, subject), r in worst.items():
                    if r == i:
                        at_level[arm].add(subject)
                rows.append(count_row(label, at_level))
            field_label = str(fields[role]["label_zh" if L.zh else "label"])
            blocks.append(_table(
                numbers, L.t(title_en, title_zh), pop, n, [field_label, *head[1:]], rows,
                (note, L.t(f"Each participant counted once, at the highest category of "
                           f"'{field_label}' recorded on the AE form.",
                           f"每名受试者按不良事件表记录的“{field_label}”最高类别计一次。")), src))
        sae_rows = [
            (str(e["subject"]), L.arm(str(e["arm"])), str(e.get("term") or ""),
             str(e.get("onset") or L.t("not recorded", "未记录")))
            for e in events if e.get("serious") == "1"
        ]
        listing_numbers = Numbering("14.3.2")
        sae_blocks: list[Any] = []
        sae_columns = [L.t("Subject", "受试者"), L.t("Arm", "组别"), L.t("Term", "术语"),
                       L.t("Onset", "发生日期")]
        if sae_rows:
            sae_blocks.append(_listing(listing_numbers, L.t("Serious adverse events", "严重不"
                                                                                      "良事件"),
                                       pop, n, sae_columns, sae_rows, (note,), src))
        else:
            sae_blocks.append(TextBlock(L.t("No serious adverse event was recorded.",
                                            "未记录严重不良事件。")))
        if deaths:
            sae_blocks.append(_listing(
                listing_numbers, L.t("Deaths", "死亡"), pop, n,
                [L.t("Subject", "受试者"), L.t("Arm", "组别"), L.t("Reason recorded", "记录原因")],
                [(str(w["subject"]), L.arm(str(w["arm"])), L.reason(str(w["reason"])))
                 for w in deaths],
                (note,), self.source("subject_level")))
        else:
            sae_blocks.append(TextBlock(L.t("No death was recorded.", "未记录死亡。")))
        return Section("14.3", L.t("Safety", "安全性"), (
            Section("14.3.1", L.t("Adverse events", "不良事件"), tuple(blocks)),
            Section("14.3.2", L.t("Deaths and serious adverse events", "死亡和严重不良事件"),
                    tuple(sae_blocks)),
            self.exposure(),
        ))

    def exposure(self) -> Section:
        L = self.L
        s = self.results.safety
        rows_in = list(s.get("exposure", ()))
        numbers = Numbering("14.3.3")
        n_by_arm = {a: int(s["n_by_arm"].get(a, 0)) for a in self.arms}
        title = L.t("Exposure and DTx adherence", "暴露与数字疗法依从性")
        if not rows_in:
            return Section("14.3.3", title, (TextBlock(L.t(
                "No daily device data are in the analysis snapshot.",
                "分析快照中没有每日设备数据。")),))
        streams: dict[str, str] = {}
        if self.meta.protocol is not None:
            streams = {d.id: f"{d.label.get(L.lang)} ({d.unit})"
                       for d in self.meta.protocol.device_streams}
        rows: list[tuple[str, ...]] = []
        for stream in dict.fromkeys(str(r["stream"]) for r in rows_in):
            rows.append((streams.get(stream, L.humanize(stream)), *("" for _ in self.arms)))
            for label, key in ((L.t("   Days observed, mean (SD)", "   观察天数，均值（标准差）"),
                                "days"),
                               (L.t("   Days with use, mean (SD)", "   使用天数，均值（标准差）"),
                                "days_used"),
                               (L.t("   Mean per day, mean (SD)", "   日均值，均值（标准差）"),
                                "mean_per_day")):
                cells = []
                for a in self.arms:
                    values = [float(r[key]) for r in rows_in
                              if r["stream"] == stream and r["arm"] == a]
                    cells.append(_mean_sd(values, L))
                rows.append((label, *cells))
        adherence_rows = self.results.listings.get("adherence", ())
        adherent = {a: sum(1 for r in adherence_rows if r["arm"] == a and r["adherent"])
                    for a in self.arms}
        assessed = {a: sum(1 for r in adherence_rows if r["arm"] == a
                           and r["adherent"] is not None) for a in self.arms}
        rows.append((L.t("Met the protocol's adherence rule", "达到方案依从性规则"),
                     *(n_pct(adherent[a], assessed[a]) if assessed[a]
                       else L.t("not assessed", "未评估") for a in self.arms)))
        table = _table(
            numbers, title, L.set_label("safety"), sum(n_by_arm.values()),
            ["", *self.arm_header(n_by_arm)], rows,
            (self.population_note("safety"),
             L.t("From the DTx's daily device data, randomization to the last visit; "
                 "adherence per the protocol's adherence rule (percent of those assessed).",
                 "来自数字疗法应用的每日设备数据（随机化至最后一次访视）；依从性按方案规则（占已评估者百分比）。")),
            self.source("exposure"))
        return Section("14.3.3", title, (table,))

    # methods and listings -----------------------------------------------------------------

    def methods(self) -> Section:
        L = self.L
        texts: list[Any] = [
            TextBlock(f"{L.ids.get(e.id, e.name)} ({L.method(e.model)}): "
                      + L.humanize(str((e.result or {}).get("model", e.error or ""))))
            for e in self.results.endpoints
        ]
        review = {
            "pooled": L.t("blinded data review with all arms pooled (no comparison between "
                          "groups).", "所有组合并的设盲数据审核（不进行组间比较）。"),
            "comparative": L.t("blinded comparative review: arms under dummy labels from a keyed "
                               "derivation, committed to before the run.",
                               "设盲比较审核：各组以密钥派生的虚拟标签表示，标签在运行前已承诺。"),
        }.get(self.results.review, L.t("unblinded run.", "非设盲运行。"))
        texts.append(TextBlock(L.t(f"Random seed of the imputations {self.results.seed}; ",
                                   f"插补随机种子 {self.results.seed}；") + review))
        texts.append(TextBlock(L.t(
            "Formats: estimates, standard errors and confidence limits with 3 decimals (a "
            "non-zero value that rounds to zero keeps 2 significant digits); p-values with 3 "
            "decimals, <0.001 below 0.001 and 4 decimals when 3 would round up to 0.050; n (%) "
            "of the column N; mean (SD) with 2 decimals.",
            "格式：估计值、标准误和置信限保留 3 位小数（舍入为"
            "零的非零值保留 2 位有效数字）；p 值保留 3 位"
            "小数，小于 0.001 记为 <0.001，若舍入为 0.0"
            "50 则保留 4 位；n（占列 N 的百分比）；均值（标准差）"
            "保留 2 位小数。")))
        return Section("16.1.9", L.t("Statistical methods", "统计方法"), tuple(texts))

    def listings(self) -> Section:
        L = self.L
        r = self.results
        n = self.n_randomized()
        all_rand = L.t("All randomized", "全部随机化受试者")
        src = self.source("subject_level")
        none = L.t("No participant.", "无受试者。")
        subj, arm = L.t("Subject", "受试者"), L.t("Arm", "组别")

        def listing(number: str, title: str, columns: Sequence[str],
                    rows: Sequence[Sequence[str]], source: str = src,
                    population: str = all_rand) -> Section:
            numbers = Numbering(number)
            block: Any = (_listing(numbers, title, population, n, columns, rows, (), source)
                          if rows else TextBlock(none))
            return Section(number, title, (block,))

        discontinued = [(str(x["subject"]), L.arm(str(x["arm"])), str(x["withdrawn_on"]),
                         L.reason(str(x["reason"])) if x.get("reason")
                         else L.t("not recorded", "未记录"))
                        for x in r.listings["discontinued"]]
        deviations = [(str(x["subject"]), L.arm(str(x["arm"])), L.humanize(str(x["deviation"])))
                      for x in r.listings.get("deviations", ())]
        primary = next((e for e in r.endpoints if e.role == "primary"), None)
        efficacy_rows = r.listings["primary_efficacy"]
        analysed = {(str(x["subject"])) for x in efficacy_rows
                    if x.get("change") is not None or x.get("value") is not None}
        excluded = [
            (str(x["subject"]), L.arm(str(x["arm"])),
             L.t("no analysable primary outcome", "无可分析的主要结局"))
            for x in r.listings.get("adherence", ())
            if primary is not None and str(x["subject"]) not in analysed
        ]
        demo_fields = [row for row in r.baseline if row["kind"] == "numeric"][:3]
        adherence = [(str(x["subject"]), L.arm(str(x["arm"])),
                      L.t("yes", "是") if x["adherent"] else L.t("no", "否")
                      if x["adherent"] is False else L.t("not assessed", "未评估"))
                     for x in r.listings.get("adherence", ())]
        efficacy = [(str(x["subject"]), L.arm(str(x["arm"])),
                     L.visit(x.get("visit")) or L.t("final", "最终"),
                     fmt(x.get("value"), 2, L.t("missing", "缺失")),
                     fmt(x.get("change"), 2, L.t("missing", "缺失")))
                    for x in efficacy_rows]
        fields = r.safety.get("fields", {})
        ae_rows = []
        uncoded = L.t("uncoded", "未编码")
        for e in r.safety.get("events", ()):
            def choice(role: str, value: Any) -> str:
                if role not in fields:
                    return L.t("not collected", "未采集")
                if value in (None, ""):
                    return L.t("not recorded", "未记录")
                for c in fields[role]["choices"]:
                    if str(c[0]) == str(value):
                        return str(c[2] if L.zh else c[1])
                return str(value)
            ae_rows.append((str(e["subject"]), L.arm(str(e["arm"])), str(e.get("term") or ""),
                            f"{e['soc']} / {e['pt']}" if e.get("pt") else uncoded,
                            str(e.get("onset") or L.t("not recorded", "未记录")),
                            choice("severity", e.get("severity")),
                            choice("relationship", e.get("relationship")),
                            choice("serious", e.get("serious"))))
        primary_name = L.ids.get(primary.id, primary.name) if primary else ""
        sections = [
            listing("16.2.1", L.t("Discontinued participants", "中止研究的受试者"),
                    [subj, arm, L.t("Withdrawn on", "退出日期"), L.t("Reason", "原因")],
                    discontinued),
            listing("16.2.2", L.t("Protocol deviations", "方案偏离"),
                    [subj, arm, L.t("Deviation", "偏离")], deviations),
            listing("16.2.3", L.t("Participants excluded from the efficacy analysis",
                                  "排除在有效性分析之外的受试者"),
                    [subj, arm, L.t("Reason", "原因")], excluded),
        ]
        if demo_fields:
            subject_values = self.subject_baseline()
            demo_rows = [(s_, L.arm(a_), *vals) for (s_, a_), vals in subject_values.items()]
            sections.append(listing(
                "16.2.4", L.t("Demographic data", "人口学数据"),
                [subj, arm, *(L.field(str(f["field"]), str(f["label"])) for f in demo_fields)],
                demo_rows))
        sections.append(listing("16.2.5", L.t("DTx adherence", "数字疗法依从性"),
                                [subj, arm, L.t("Met the adherence rule", "达到依从性规则")],
                                adherence, self.source("exposure")))
        sections.append(listing(
            "16.2.6", L.t("Primary efficacy data", "主要有效性数据") + (
                f": {primary_name}" if primary_name else ""),
            [subj, arm, L.t("Visit", "访视"), L.t("Value", "数值"), L.t("Change", "变化")],
            efficacy, self.source(primary.id) if primary else src,
            L.set_label("fas")))
        sections.append(listing(
            "16.2.7", L.t("Adverse events", "不良事件"),
            [subj, arm, L.t("Term as reported", "报告术语"), "SOC / PT",
             L.t("Onset", "发生日期"), L.t("Severity", "严重程度"),
             L.t("Relationship", "相关性"), L.t("Serious", "严重")],
            ae_rows, self.source("adverse_events"), L.set_label("safety")))
        return Section("16.2", L.t("Subject data listings", "受试者数据清单"), tuple(sections),
                       landscape=True)

    def subject_baseline(self) -> dict[tuple[str, str], list[str]]:
        """Per-subject values of the first three numeric baseline variables (listing 16.2.4)."""
        fields = [row for row in self.results.baseline if row["kind"] == "numeric"][:3]
        values = {(str(x["subject"]), str(x["arm"])): x["values"] for x in
                  self.results.listings.get("demographics", ())}
        out: dict[tuple[str, str], list[str]] = {}
        for key, vals in values.items():
            out[key] = [fmt(vals.get(str(f["field"])), 2, self.L.t("missing", "缺失"))
                        for f in fields]
        return out


def _sentence(text: str, L: Labels) -> str:
    text = text.strip()
    return text if text.endswith((".", "。")) else text + L.t(".", "。")


def _mean_sd(values: Sequence[float], L: Labels) -> str:
    if not values:
        return L.t("no data", "无数据")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{mean:.1f} ({L.t('SD not estimable', '标准差无法估计')})"
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.1f} ({sd:.1f})"


#: the whole-trial figures of a pooled blinded review (`analysis.sap._pooled_summary`)
POOLED_STATISTICS: dict[str, tuple[str, str]] = {
    "n": ("N", "N"),
    "n_observed": ("n observed", "观察到的 n"),
    "mean": ("Mean", "均值"),
    "sd": ("SD", "标准差"),
    "responders": ("Responders", "应答者"),
    "proportion": ("Proportion responding", "应答比例"),
    "events": ("Events", "事件数"),
    "follow_up": ("Follow-up (total time)", "随访（总时间）"),
    "event_rate": ("Event rate (events per unit of follow-up time)",
                   "事件率（每单位随访时间的事件数）"),
}


def build_report_spec(results: AnalysisResults, meta: ReportMeta) -> ReportSpec:
    """Lay the results out as an ICH E3-style statistical analysis report."""
    builder = Builder(results, meta)
    L = builder.L
    status, is_draft = builder.data_status()
    not_stated = L.t("not stated in the protocol", "方案未说明")
    efficacy = builder.efficacy()  # collects the analyses not run (shown at its end)
    title = results.title
    if L.zh and meta.protocol is not None:
        title = meta.protocol.title.get("zh") or title
    spec = ReportSpec(
        trial_code=results.trial,
        trial_title=title,
        product_name=meta.product_name or not_stated,
        product_version=meta.product_version or not_stated,
        indication=meta.indication or not_stated,
        design=meta.design,
        sponsor=meta.sponsor or not_stated,
        phase=meta.phase,
        protocol_version=results.protocol_version,
        data_cutoff_on=meta.cutoff_on,
        blinded=results.blinded,
        generated_at=meta.generated_at,
        software_versions=dict(meta.software_versions),
        data_snapshot_sha256=meta.data_sha256,
        gcp_statement=(GCP_FACTS[1] if L.zh else GCP_FACTS[0]) + " " + status[:1].upper()
        + status[1:] + L.t(".", "。"),
        sections=(
            builder.disposition(),
            builder.baseline(),
            efficacy,
            builder.safety(),
            builder.methods(),
            builder.listings(),
        ),
        report_title=L.t("Statistical Analysis Report", "统计分析报告"),
        study_start_on=meta.first_consent_on,
        study_completion_on=meta.last_visit_on,
        page_size=meta.page_size,
        language=meta.language,
        data_status=status,
        is_draft=is_draft,
        signature_status=builder.signature_status(is_draft),
        recorded_texts=tuple(sorted(L.recorded_texts)),
    )
    return in_chinese(spec, meta.protocol) if L.zh else spec


def in_chinese(spec: ReportSpec, protocol: Protocol | None) -> ReportSpec:
    """Put the English the analysis wrote into its results (model descriptions, handling of
    missing data and intercurrent events, reasons not run, number words) into Chinese
    (`analysis.report.phrases`) in every fixed text of a Chinese report. Data printed as
    recorded (``spec.recorded_texts``, data listings' cells) are left as they are; a device
    stream's English label becomes its Chinese one."""
    recorded = set(spec.recorded_texts)
    streams = [(f"({d.label.en})", f"（{d.label.zh}）") for d in
               (protocol.device_streams if protocol is not None else ()) if d.label.zh]

    # recorded data inside a fixed text ("   eye strain (uncoded)") stays as recorded: only the
    # text around it is translated (a formula word such as "eye" must not touch a verbatim term)
    inside = re.compile("(?<![A-Za-z])(" + "|".join(
        re.escape(t) for t in sorted(recorded, key=len, reverse=True) if t) + ")(?![A-Za-z])"
    ) if any(recorded) else None

    def tr(text: str) -> str:
        if text.strip() in recorded:
            return text
        for en, zh in streams:
            text = text.replace(en, zh)
        if inside is None:
            return translate(text)
        pieces, last = [], 0
        for found in inside.finditer(text):
            pieces += [translate(text[last:found.start()]), found.group()]
            last = found.end()
        return "".join(pieces) + translate(text[last:])

    def block(item: Any) -> Any:
        if isinstance(item, Section):
            return replace(item, title=tr(item.title), blocks=tuple(block(b) for b in item.blocks))
        if isinstance(item, TextBlock):
            return replace(item, text=tr(item.text))
        if isinstance(item, TableBlock | ListingBlock | FigureBlock):
            changes: dict[str, Any] = {
                "title": tr(item.title), "population": tr(item.population),
                "footnotes": tuple(tr(f) for f in item.footnotes), "source": tr(item.source)}
            if isinstance(item, TableBlock | ListingBlock):
                changes["columns"] = tuple(tr(c) for c in item.columns)
            if isinstance(item, TableBlock):
                changes["rows"] = tuple(tuple(tr(c) for c in row) for row in item.rows)
            return replace(item, **changes)
        return item

    return replace(spec, sections=tuple(block(s) for s in spec.sections),
                   data_status=tr(spec.data_status), design=tr(spec.design))
