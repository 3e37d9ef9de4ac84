"""Page labels in English and Simplified Chinese: `t(key)` in every template.

The language comes from the `lang` cookie (set by the switch link in the header), else from the
browser's Accept-Language, else English. Form labels come from the protocol (`Label.get(lang)`),
not from here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

LANGUAGES = ("en", "zh")
LANGUAGE_NAMES = {"en": "English", "zh": "简体中文"}
HTML_LANG = {"en": "en", "zh": "zh-Hans"}

MESSAGES: dict[str, tuple[str, str]] = {
    # key: (English, Simplified Chinese)
    "app_name": ("dtx-trials", "dtx-trials 临床试验平台"),
    "sign_in": ("Sign in", "登录"),
    "sign_out": ("Sign out", "退出"),
    "username": ("Username", "用户名"),
    "password": ("Password", "密码"),
    "invalid_login": ("Invalid username or password.", "用户名或密码错误。"),
    "locked": (
        "This account is locked after repeated failed sign-ins. Try again later.",
        "多次登录失败，账户已被锁定。请稍后再试。",
    ),
    "change_password": ("Change password", "修改密码"),
    "current_password": ("Current password", "当前密码"),
    "new_password": ("New password", "新密码"),
    "password_changed": ("Your password was changed.", "密码已修改。"),
    "password_rules": (
        "At least 12 characters; not your username.",
        "至少12个字符，且不能与用户名相同。",
    ),
    "my_trials": ("My trials", "我的试验"),
    "no_trials": ("You hold no role in any trial yet.", "您尚未在任何试验中担任角色。"),
    "api_docs": ("API documentation", "API 文档"),
    "code": ("Code", "编号"),
    "title": ("Title", "标题"),
    "status": ("Status", "状态"),
    "blinding": ("Blinding", "设盲"),
    "my_roles": ("My roles", "我的角色"),
    "language": ("Language", "语言"),
    "skip_to_content": ("Skip to content", "跳到正文"),
    "dashboard": ("Dashboard", "概览"),
    "participants": ("Participants", "受试者"),
    "participant": ("Participant", "受试者"),
    "queries": ("Queries", "质疑"),
    "audit_trail": ("Audit trail", "稽查轨迹"),
    "analyses": ("Analyses", "统计分析"),
    "data_cutoff": ("Data cut-off", "数据截止日期"),
    "randomization_simulation": ("Randomization design simulation", "随机化设计模拟"),
    "participants_per_trial": ("Participants per simulated trial", "每次模拟的受试者数"),
    "simulated_trials": ("Simulated trials", "模拟次数"),
    "simulate": ("Simulate", "模拟"),
    "mean_mc_se": (
        "Mean ± Monte-Carlo standard error over the simulated trials",
        "模拟试验的均值 ± 蒙特卡洛标准误",
    ),
    "metric": ("Metric", "指标"),
    "chance_level": ("chance level of correct guesses", "随机猜中水平"),
    "unblinded_run": ("Unblinded", "揭盲分析"),
    "blinded_run": ("Blinded (arms A, B)", "设盲分析（A组、B组）"),
    "run_sap": ("Run the analysis plan", "运行统计分析计划"),
    "progress": ("Progress", "进度"),
    "report": ("Report", "报告"),
    "no_runs": ("No analysis has been run yet.", "尚未运行任何分析。"),
    "exports": ("Exports", "数据导出"),
    "data_snapshot": ("Data snapshot SHA-256", "数据快照SHA-256"),
    "endpoint": ("Endpoint", "终点"),
    "model": ("Model", "模型"),
    "contrast": ("Contrast", "比较"),
    "estimate": ("Estimate", "估计值"),
    "see_report": ("See the report", "见报告"),
    "mean_over_time": ("mean over time", "随时间变化的均值"),
    "weeks": ("Weeks", "周"),
    "days": ("Days", "天"),
    "mean": ("Mean", "均值"),
    "survival": ("Probability", "概率"),
    "subgroups": ("subgroups", "亚组"),
    "enrollment": ("Enrollment", "入组情况"),
    "enrollment_by_site": ("Enrolled by site", "各中心入组人数"),
    "enrollment_over_time": ("Cumulative enrollment over time", "累计入组人数随时间变化"),
    "no_enrollment": ("No participant is enrolled yet.", "尚无受试者入组。"),
    "n_enrolled": ("Enrolled", "已入组"),
    "protocol_versions": ("Protocol versions", "方案版本"),
    "version": ("Version", "版本"),
    "created": ("Created", "创建时间"),
    "activated": ("Activated", "生效时间"),
    "activate": ("Activate", "启用"),
    "accept_changes": (
        "Accept breaking changes (ids, comma-separated)",
        "接受破坏性变更（编号，逗号分隔）",
    ),
    "diff": ("Differences", "差异"),
    "show_diff": ("Compare with previous", "与上一版本比较"),
    "diff_title": ("Changes from version {old} to version {new}", "版本 {old} 到版本 {new} 的变更"),
    "no_changes": ("No changes.", "无变更。"),
    "breaking": ("Breaking", "破坏性"),
    "change": ("Change", "变更"),
    "path": ("Path", "路径"),
    "upload_protocol": ("Upload or validate a protocol", "上传或校验方案"),
    "protocol_text": ("Protocol document (YAML)", "方案文件（YAML）"),
    "protocol_file": ("…or choose a file", "……或选择文件"),
    "validate": ("Validate only", "仅校验"),
    "upload": ("Upload as new version", "作为新版本上传"),
    "protocol_valid": ("The protocol is valid.", "方案校验通过。"),
    "protocol_uploaded": ("Stored as version {n}.", "已保存为版本 {n}。"),
    "protocol_same": ("Identical to version {n}; nothing stored.", "与版本 {n} 相同，未保存。"),
    "sites": ("Sites", "研究中心"),
    "site": ("Site", "研究中心"),
    "name": ("Name", "名称"),
    "name_zh": ("Chinese name", "中文名称"),
    "country": ("Country (2 letters)", "国家（两位字母）"),
    "timezone": ("Time zone", "时区"),
    "active": ("Active", "启用"),
    "pending_approval": ("Waiting for a second administrator", "待另一位管理员批准"),
    "approve": ("Approve", "批准"),
    "add_site": ("Add site", "添加中心"),
    "accounts": ("Accounts and roles", "账户与角色"),
    "role": ("Role", "角色"),
    "user": ("User", "用户"),
    "grant_role": ("Grant role", "授予角色"),
    "create_account": ("Create account", "创建账户"),
    "printed_name": ("Printed name", "签名显示姓名"),
    "any_site": ("All sites", "所有中心"),
    "revoke": ("Revoke", "撤销"),
    "saved": ("Saved.", "已保存。"),
    "screen_participant": ("Screen a new participant", "筛选新受试者"),
    "full_name": ("Full name (encrypted)", "姓名（加密存储）"),
    "phone": ("Phone (encrypted)", "电话（加密存储）"),
    "screen": ("Screen", "筛选"),
    "subject_code": ("Subject", "受试者编号"),
    "next_visit": ("Next visit due", "下次访视"),
    "overdue": ("overdue", "已超窗"),
    "window": ("window", "窗口期"),
    "none": ("—", "—"),
    "consent": ("Consent", "知情同意"),
    "record_consent": ("Record signed consent", "记录已签署的知情同意"),
    "document": ("Document", "文件"),
    "signer_role": ("Signed by", "签署人"),
    "signer_participant": ("Participant", "受试者本人"),
    "signer_guardian": ("Guardian", "监护人"),
    "signer_legally_authorized_representative": ("Legally authorized representative", "法定代理人"),
    "signer_witness": ("Witness", "见证人"),
    "consents_signed": ("Signed consents", "已签署的知情同意"),
    "eligibility": ("Eligibility", "入选资格"),
    "check_eligibility": ("Check eligibility", "评估入选资格"),
    "eligible": ("Eligible: every criterion is met.", "符合入选标准：所有条件均满足。"),
    "not_eligible": ("Not eligible. Failed criteria:", "不符合入选标准。未满足的条件："),
    "undetermined": ("Not yet decided (missing data):", "尚无法判断（数据缺失）："),
    "enroll": ("Enroll", "入组"),
    "randomize": ("Randomize", "随机化"),
    "randomization": ("Randomization", "随机化"),
    "randomization_number": ("Randomization number", "随机号"),
    "activation_code": ("App activation code", "应用激活码"),
    "allocated_at": ("Allocated at", "分配时间"),
    "visits": ("Visits and forms", "访视与表单"),
    "visit": ("Visit", "访视"),
    "planned": ("Planned", "计划日期"),
    "forms": ("Forms", "表单"),
    "form": ("Form", "表单"),
    "logs": ("Logs (repeating forms)", "日志（可重复表单）"),
    "add_entry": ("Add entry", "新增条目"),
    "entry": ("Entry", "条目"),
    "open_form": ("Open", "打开"),
    "not_started": ("not started", "未开始"),
    "save_draft": ("Save draft", "保存草稿"),
    "submit": ("Submit", "提交"),
    "form_has_errors": (
        "The form has errors; see the messages next to the fields.",
        "表单有错误，请查看字段旁的提示。",
    ),
    "reason_for_change": ("Reason for change", "修改原因"),
    "reason_for_change_help": (
        "Required when changing data that was already submitted.",
        "修改已提交的数据时必须填写。",
    ),
    "acknowledge": ("Acknowledge warning", "确认警告"),
    "derived": ("computed", "自动计算"),
    "missing_code": ("Missing data code", "缺失数据代码"),
    "record_version": ("Record version", "记录版本"),
    "signatures": ("Electronic signatures", "电子签名"),
    "sign": ("Sign", "签名"),
    "sign_form": ("Sign this form", "签署此表单"),
    "meaning": ("Meaning of signature", "签名含义"),
    "meaning_authorship": ("Authorship", "作者"),
    "meaning_review": ("Review", "审阅"),
    "meaning_approval": ("Approval", "批准"),
    "meaning_responsibility": ("Responsibility", "责任"),
    "signing_as": ("Signing as {name} at {at} (UTC)", "签名人 {name}，时间 {at}（UTC）"),
    "signing_content": (
        "You sign version {version} of this record, content fingerprint {fingerprint}",
        "您签署的是本记录第 {version} 版，内容指纹 {fingerprint}",
    ),
    "signed_by": ("Signed by {name} on {at} — {meaning}", "{name} 于 {at} 签署 — {meaning}"),
    "invalidated": ("invalidated", "已失效"),
    "verify": ("Source data verified", "源数据核查完成"),
    "freeze": ("Freeze", "冻结"),
    "lock": ("Lock", "锁定"),
    "raise_query": ("Raise a query", "发起质疑"),
    "field": ("Field", "字段"),
    "query_text": ("Query text", "质疑内容"),
    "answer": ("Answer", "回复"),
    "answer_query": ("Send answer", "发送回复"),
    "close": ("Close", "关闭"),
    "reopen": ("Reopen", "重新打开"),
    "note": ("Note", "备注"),
    "no_queries": ("No queries.", "没有质疑。"),
    "all": ("All", "全部"),
    "description": ("Description", "描述"),
    "filter": ("Filter", "筛选"),
    "emergency_unblinding": ("Emergency unblinding", "紧急揭盲"),
    "unblind": ("Unblind this participant", "揭盲该受试者"),
    "unblind_warning": (
        "Only for a medical emergency. The event is recorded with your name and reason.",
        "仅用于医疗紧急情况。该操作将连同您的姓名和原因一起记录。",
    ),
    "reason": ("Reason", "原因"),
    "visit_actual": ("Actual date", "实际日期"),
    "signer_name": ("Signer's name", "签署人姓名"),
    "econsent_send": ("Send a remote consent link", "发送远程知情同意链接"),
    "econsent_sent": ("Link sent (shown once):", "链接已发送（仅显示一次）："),
    "econsent_channel": ("Send by", "发送方式"),
    "econsent_address": (
        "Signer's phone or e-mail (blank: the participant's own)",
        "签署人手机或邮箱（留空：受试者本人）",
    ),
    "signer_phone": ("Signer's phone", "签署人电话"),
    "reconsent_required": (
        "Re-consent required before further data entry",
        "需重新签署知情同意后方可继续录入数据",
    ),
    "visit_missed": ("Missed", "缺失访视"),
    "visit_date": ("Visit date", "访视日期"),
    "visit_time": ("Time", "时间"),
    "record_visit_date": ("Record visit date", "记录访视日期"),
    "deviations": ("Protocol deviations", "方案偏离"),
    "no_deviations": ("No protocol deviations.", "无方案偏离。"),
    "deviation_kind": ("Kind", "类型"),
    "deviation_detected": ("Detected", "发现时间"),
    "dev_out_of_window": ("Visit out of window", "访视超窗"),
    "dev_missed_visit": ("Missed visit", "缺失访视"),
    "st_reviewed": ("Reviewed", "已审阅"),
    "review_deviation": ("Mark reviewed", "标记已审阅"),
    "category": ("Category", "类别"),
    "cat_serious_adverse_event": ("Serious adverse event", "严重不良事件"),
    "cat_medical_emergency": ("Medical emergency", "医疗紧急情况"),
    "cat_regulatory": ("Regulatory", "法规要求"),
    "cat_other": ("Other", "其他"),
    "unblinded_result": ("Treatment arm of {subject}", "{subject} 的治疗组"),
    "unblinded_note": (
        "Shown to you only, once. Signed by {name} at {at} (UTC).",
        "仅向您显示一次。由 {name} 于 {at}（UTC）签署。",
    ),
    "arm": ("Arm", "组别"),
    "back": ("Back", "返回"),
    "entity_type": ("Entity type", "实体类型"),
    "action": ("Action", "操作"),
    "since": ("From (date)", "开始日期"),
    "until": ("To (date, exclusive)", "结束日期（不含）"),
    "when": ("When (UTC)", "时间（UTC）"),
    "who": ("Who", "操作人"),
    "what": ("What", "内容"),
    "seq": ("#", "序号"),
    "integrity": ("Integrity check", "完整性校验"),
    "integrity_ok": (
        "Intact: {events} events in {chains} chain(s); {rows} rows match the trail.",
        "完整：{chains} 条链中共 {events} 个事件；{rows} 行数据与轨迹一致。",
    ),
    "integrity_bad": ("{n} problem(s) found:", "发现 {n} 个问题："),
    "previous": ("Previous", "上一页"),
    "next": ("Next", "下一页"),
    "page_of": (
        "Page {page} of {pages} ({total} events)",
        "第 {page} / {pages} 页（共 {total} 个事件）",
    ),
    "st_screening": ("screening", "筛选中"),
    "st_consented": ("consented", "已知情同意"),
    "st_eligible": ("eligible", "符合入选"),
    "st_enrolled": ("enrolled", "已入组"),
    "st_randomized": ("randomized", "已随机"),
    "st_screen_failed": ("screen failed", "筛选失败"),
    "st_withdrawn": ("withdrawn", "已退出"),
    "st_completed": ("completed", "已完成"),
    "st_draft": ("draft", "草稿"),
    "st_submitted": ("submitted", "已提交"),
    "st_verified": ("verified", "已核查"),
    "st_signed": ("signed", "已签名"),
    "st_frozen": ("frozen", "已冻结"),
    "st_locked": ("locked", "已锁定"),
    "st_open": ("open", "待回复"),
    "st_answered": ("answered", "已回复"),
    "st_closed": ("closed", "已关闭"),
    "st_planned": ("planned", "计划中"),
    "st_active": ("active", "生效中"),
    "st_superseded": ("superseded", "已被取代"),
    "st_valid": ("valid", "有效"),
    "st_invalidated": ("invalidated", "已失效"),
    "st_queued": ("queued", "排队中"),
    "st_running": ("running", "运行中"),
    "st_succeeded": ("succeeded", "运行成功"),
    "st_failed": ("failed", "失败"),
    "bl_open": ("open label", "开放"),
    "bl_single": ("single blind", "单盲"),
    "bl_double": ("double blind", "双盲"),
    "role_sponsor_admin": ("Sponsor administrator", "申办方管理员"),
    "role_investigator": ("Investigator", "研究者"),
    "role_coordinator": ("Study coordinator", "研究协调员"),
    "role_monitor": ("Monitor", "监查员"),
    "role_data_manager": ("Data manager", "数据管理员"),
    "role_statistician": ("Statistician", "统计师"),
    "role_unblinded_statistician": ("Unblinded statistician", "非盲统计师"),
    "role_auditor": ("Auditor", "稽查员"),
    "role_participant": ("Participant", "受试者"),
    "role_outcome_assessor": ("Outcome assessor (blinded)", "结局评估者（设盲）"),
}


def translate(key: str, lang: str, **values: object) -> str:
    """Return the label for `key` in `lang` (English when unknown), with `{name}` filled in."""
    pair = MESSAGES.get(key)
    if pair is None:
        return key
    text = pair[1] if lang == "zh" else pair[0]
    return text.format(**values) if values else text


# Messages of the form engine (ecrf) and of the form service, as (pattern, Chinese); ``{0}`` is
# the pattern's group. Edit checks carry their own Chinese text in the protocol.
ENGINE_MESSAGES_ZH: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(f"^{pattern}$"), zh)
    for pattern, zh in (
        (r"the form has errors", "表单有错误"),
        (r"required", "必填"),
        (r"must be at least (.+)", "不能小于 {0}"),
        (r"must be at most (.+)", "不能大于 {0}"),
        (r"must be a number", "须为数字"),
        (r"must be a finite number", "须为有限的数值"),
        (r"must be a whole number", "须为整数"),
        (r"at most (\d+) decimal place\(s\)", "最多 {0} 位小数"),
        (r"number out of range", "数值超出范围"),
        (r"must be text", "须为文本"),
        (r"at most (\d+) characters", "最多 {0} 个字符"),
        (r"must be a date YYYY-MM-DD", "须为日期（YYYY-MM-DD）"),
        (r"not a valid calendar date", "不是有效的日期"),
        (r"must be (?:on|at) or after (.+)", "不能早于 {0}"),
        (r"must be (?:on|at) or before (.+)", "不能晚于 {0}"),
        (r"must be a date and time .+", "须为日期和时间（YYYY-MM-DDTHH:MM）"),
        (r"must be a time HH:MM or HH:MM:SS", "须为时间（HH:MM 或 HH:MM:SS）"),
        (r"not a valid time of day", "不是有效的时间"),
        (r"must be yes or no", "须为是或否"),
        (r"must be a choice code", "须为选项代码"),
        (r"(.+) is not one of the choices", "{0} 不是可选项"),
        (r"unknown field", "未知字段"),
    )
)


def translate_message(text: str, lang: str, known: Mapping[str, str] | None = None) -> str:
    """Return a form-engine or form-service message in `lang`.

    `known` maps English texts that have their own translation (the protocol's edit-check
    messages) to it; other texts are matched against the engine's messages; anything else is
    returned as it is.
    """
    if lang != "zh":
        return text
    if known and text in known:
        return known[text]
    for pattern, zh in ENGINE_MESSAGES_ZH:
        match = pattern.match(text)
        if match:
            return zh.format(*match.groups())
    return text


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    """Choose the page language: the cookie first, then the first supported Accept-Language."""
    if cookie in LANGUAGES:
        return cookie
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return "en"
