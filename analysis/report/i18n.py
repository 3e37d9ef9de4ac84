"""Fixed texts of the statistical report in English and Simplified Chinese.

Protocol texts (arm, visit, field, endpoint names…) come from the protocol's own ``en``/``zh``
labels; this table holds only the texts the report itself writes. ``text(key, lang, **values)``
returns the text in the language, formatted with ``values``; an unknown key is a KeyError (a
test renders every key in both languages).
"""

from __future__ import annotations

from typing import Literal

Language = Literal["en", "zh"]

TEXTS: dict[str, tuple[str, str]] = {
    # running header / footer / title page (analysis/report/document.py)
    "report_title": ("Statistical Analysis Report", "统计分析报告"),
    "blinded": ("BLINDED", "设盲"),
    "unblinded": ("UNBLINDED", "非设盲"),
    "draft_banner": ("DRAFT: data NOT locked (interim/draft)", "草稿：数据未锁定（期中/草稿）"),
    "cutoff_header": ("Data cut-off {date}", "数据截止日 {date}"),
    "no_cutoff_header": ("No data cut-off set", "未设定数据截止日"),
    "generated_footer": ("Generated {at} · data snapshot {sha}", "生成于 {at} · 数据快照 {sha}"),
    "page_of": ("Page {page} of {total}", "第 {page} 页，共 {total} 页 (Page {page} of {total})"),
    "toc": ("Table of Contents", "目录"),
    "Table": ("Table", "表"),
    "Figure": ("Figure", "图"),
    "Listing": ("Listing", "清单"),
    "source": ("Source: {source}", "来源：{source}"),
    "caption_n": ("{population}, N = {n}", "{population}，N = {n}"),
    "protocol_code": ("Protocol code", "方案编号"),
    "protocol_version": ("Protocol version", "方案版本"),
    "product": ("Product", "产品"),
    "product_version": ("{name} version {version}", "{name}，版本 {version}"),
    "indication": ("Indication", "适应症"),
    "design": ("Design", "设计"),
    "phase": ("Phase", "阶段"),
    "sponsor": ("Sponsor", "申办方"),
    "study_start": ("Study start (first consent)", "研究开始（首例知情同意）"),
    "study_last_visit": ("Last visit recorded", "最后一次访视"),
    "data_cutoff": ("Data cut-off", "数据截止日"),
    "no_cutoff": ("none set: all data captured up to the report date",
                  "未设定：包含截至报告日期采集的全部数据"),
    "report_date": ("Report date", "报告日期"),
    "blinding_status": ("Blinding status", "设盲状态"),
    "blinded_title": ("Blinded", "设盲"),
    "unblinded_title": ("Unblinded", "非设盲"),
    "snapshot": ("Data snapshot SHA-256", "数据快照 SHA-256"),
    "software": ("Software", "软件"),
    "database_lock": ("Database lock", "数据库锁定"),
    "statement": ("Statement of data status", "数据状态声明"),
    "signature": ("Electronic signature", "电子签名"),
    "not_stated": ("not stated in the protocol", "方案未说明"),
    # figures (analysis/report/consort.py, figures.py)
    "consort_enrollment": ("Enrollment", "入组"),
    "consort_allocation": ("Allocation", "分配"),
    "consort_follow_up": ("Follow-up", "随访"),
    "consort_analysis": ("Analysis", "分析"),
    "consort_assessed": ("Assessed for eligibility (n={n})", "评估合格性 (n={n})"),
    "consort_excluded": ("Excluded (n={n})", "排除 (n={n})"),
    "consort_randomized": ("Randomized (n={n})", "随机化 (n={n})"),
    "consort_allocated": ("Allocated to {arm} (n={n})", "分配至{arm} (n={n})"),
    "consort_received": ("Received allocated intervention (n={n})", "接受分配的干预 (n={n})"),
    "consort_not_received": ("Did not receive allocated intervention (n={n})",
                             "未接受分配的干预 (n={n})"),
    "consort_use_not_recorded": ("Receipt of the allocated intervention: not recorded",
                                 "是否接受分配的干预：未记录"),
    "consort_lost": ("Lost to follow-up (n={n})", "失访 (n={n})"),
    "consort_discontinued": ("Discontinued intervention (n={n})", "中止干预 (n={n})"),
    "consort_analysed": ("Analysed (n={n})", "纳入分析 (n={n})"),
    "consort_excluded_analysis": ("Excluded from analysis (n={n})", "排除在分析之外 (n={n})"),
    "number_at_risk": ("Number at risk", "风险人数"),
    "subgroup": ("Subgroup", "亚组"),
    "interaction_p": ("Interaction p", "交互作用 p"),
    "prespecified_subgroups": ("Pre-specified subgroup analysis", "预设亚组分析"),
    "exploratory_subgroups": ("Exploratory (not pre-specified) subgroup analysis",
                              "探索性（非预设）亚组分析"),
    "no_data_yet": ("no data recorded", "尚无数据"),
}


def text(key: str, lang: Language = "en", **values: object) -> str:
    """Return the fixed text ``key`` in ``lang``, formatted with ``values``."""
    en, zh = TEXTS[key]
    template = zh if lang == "zh" else en
    return template.format(**values) if values else template
