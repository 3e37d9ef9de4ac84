"""Chinese for the English the analysis writes into its results (model descriptions, missing-
data and intercurrent-event handling, detection rules, reasons an analysis was not run, the
formatting words of numbers), applied to every fixed text of the Chinese edition.

The estimators describe what they did in English sentences built from fixed fragments and
names (``ANCOVA (OLS): change ~ arm + baseline; LS means by emmeans-style equal weighting
…``); `translate` replaces each fragment by its Chinese (longest first), then the words of the
model formula (``change``, ``arm``, ``visit`` …). Abbreviations and the names of methods
(MMRM, REML, Wald, Satterthwaite, Kaplan-Meier) stay as they are, as in Chinese statistical
writing. A fragment missing here is found by the report lint (``untranslated``), which fails
the build of a Chinese report that still carries English.
"""

from __future__ import annotations

import re

#: (English fragment, Chinese): longest fragments are replaced first
PHRASES: tuple[tuple[str, str], ...] = (
    # ANCOVA / MMRM (analysis/estimators/ancova.py, mmrm.py, _covariance.py)
    ("LS means by emmeans-style equal weighting over factor levels with numeric covariates "
     "at their mean", "LS 均值按 emmeans 方式对因子水平等权、数值协变量取均值"),
    ("LS means with covariates at their mean over analysed rows and factor levels weighted "
     "equally (emmeans default)", "LS 均值：协变量取分析行均值、因子水平等权（emmeans 默认）"),
    ("t-based CIs and p-values on", "基于 t 分布的 CI 和 p 值，自由度"),
    ("residual df", "残差自由度"),
    ("covariance over", "协方差：按"),
    ("within", "在"),
    ("unstructured (log-Cholesky parameterisation)", "非结构化（log-Cholesky 参数化）"),
    ("compound symmetry, homogeneous variance", "复合对称，方差齐性"),
    ("compound symmetry, heterogeneous variances by visit", "复合对称，各访视方差不等"),
    ("first-order autoregressive over visit positions, homogeneous variance",
     "按访视顺序的一阶自回归，方差齐性"),
    ("first-order autoregressive over visit positions, heterogeneous variances",
     "按访视顺序的一阶自回归，方差不等"),
    ("Toeplitz (banded by visit distance, partial-autocorrelation parameterisation)",
     "Toeplitz（按访视间距带状，偏自相关参数化）"),
    ("Toeplitz with heterogeneous variances by visit", "Toeplitz，各访视方差不等"),
    ("Kenward-Roger adjusted covariance and df (linear covariance parameterisation, expected "
     "REML information)", "Kenward-Roger 校正协方差与自由度（线性协方差参数化，期望 REML 信息）"),
    ("Satterthwaite df from the observed REML information (Hessian in the covariance "
     "parameters)", "Satterthwaite 自由度，基于观测 REML 信息（协方差参数的 Hessian 矩阵）"),
    ("between-within df (mmrm rule: between", "组间-组内自由度（mmrm 规则：组间"),
    ("a contrast takes the smaller)", "对比取较小者）"),
    ("asymptotic (normal) tests", "渐近（正态）检验"),
    # binary (analysis/estimators/binary.py)
    ("logistic regression: ", "logistic 回归："),
    ("Firth penalized likelihood (separation in the data); odds ratios with profile "
     "penalized-likelihood CIs and penalized likelihood-ratio tests",
     "Firth 惩罚似然（数据存在分离）；比值比及轮廓惩罚似然 CI、惩罚似然比检验"),
    ("maximum likelihood; odds ratios with Wald CIs and z tests on the log-odds scale",
     "最大似然；比值比及 Wald CI，对数比值尺度上的 z 检验"),
    ("unadjusted comparison of ", "未校正比较："),
    ("between arms: risk difference with Wald and Newcombe hybrid-score (method 10) CIs; "
     "Fisher exact, Pearson chi-square without and with Yates' continuity correction "
     "(R chisq.test's default for 2 x 2) tests",
     "（组间）：率差及 Wald 与 Newcombe 混合得分（方法 10）CI；Fisher 精确检验、Pearson "
     "卡方检验（不校正及 Yates 连续性校正，R chisq.test 对 2 x 2 表的默认）"),
    ("MH common odds ratio (Robins-Breslow-Greenland CI), MH risk difference (Sato "
     "variance), CMH chi-square", "MH 合并比值比（Robins-Breslow-Greenland CI），MH 率差"
     "（Sato 方差），CMH 卡方检验"),
    ("without continuity correction", "不作连续性校正"),
    ("with continuity correction", "作连续性校正"),
    ("stratified by", "分层因素"),
    # GEE / mixed model (analysis/estimators/gee.py)
    ("GEE (Gaussian, identity link): ", "广义估计方程（高斯分布，恒等连接）："),
    ("exchangeable working correlation within", "可交换工作相关，聚类单位"),
    ("robust sandwich SEs (model-based naive SEs beside them, ci_method wald_naive)",
     "稳健三明治标准误（并列模型标准误）"),
    ("robust sandwich SEs (model-based naive SEs beside them, ci method Wald，模型标准误)",
     "稳健三明治标准误（并列模型标准误）"),
    ("Wald tests", "Wald 检验"),
    ("geepack moment estimators for scale and correlation", "尺度与相关参数采用 geepack 矩估计"),
    ("linear mixed model: ", "线性混合模型："),
    ("t tests with nlme containment df", "t 检验，nlme 包含法自由度"),
    # survival (analysis/estimators/survival.py)
    ("Kaplan-Meier by", "Kaplan-Meier 法，按"),
    (" (Greenwood variance, ", "（Greenwood 方差，"),
    ("CIs as survfit conf.type =", "CI，同 survfit conf.type ="),
    ("medians and CIs by survfit's quantile rule", "中位数及其 CI 按 survfit 分位数规则"),
    ("log-rank test (survdiff)", "log-rank 检验（survdiff）"),
    ("Cox proportional hazards: ", "Cox 比例风险模型："),
    ("Efron ties; hazard ratios with Wald CIs and z tests",
     "Efron 结处理；风险比及 Wald CI 和 z 检验"),
    # subgroups (analysis/subgroups.py)
    ("effect of", "效应："),
    ("within each level of", "在各水平内："),
    ("interaction test against", "交互作用检验，对照模型"),
    # missing data (analysis/sap.py)
    ("missing at random: the MMRM likelihood uses every observed visit",
     "随机缺失：MMRM 似然使用所有观测到的访视"),
    ("missing at random given the covariates: complete-case ANCOVA (the same estimate as "
     "multiple imputation under MAR with these covariates)",
     "给定协变量下随机缺失：完整病例 ANCOVA（与以这些协变量在 MAR 下多重插补的估计相同）"),
    ("excluded (GEE is valid under MCAR only); see the sensitivity analyses",
     "排除（GEE 仅在 MCAR 下有效）；见敏感性分析"),
    ("excluded from the fit (valid under MAR given the covariates); see the sensitivity "
     "analyses", "不纳入拟合（给定协变量下 MAR 时有效）；见敏感性分析"),
    ("pooled blinded review: all arms together, no comparison between groups",
     "合并设盲审阅：各组合并，不作组间比较"),
    # intercurrent events (analysis/intercurrent.py, analysis/sap.py)
    ("post-event data used as observed; missing values handled by the model under MAR",
     "事件后数据按观测值使用；缺失值由模型在 MAR 假设下处理"),
    ("post-event values set to missing, then handled under MAR",
     "事件后数值设为缺失，再按 MAR 处理"),
    ("post-event outcome replaced by the stated composite value", "事件后结局替换为规定的复合值"),
    ("data truncated at the event (last on-treatment value; survival: censored at the event)",
     "数据在事件处截断（取末次治疗期间数值；生存分析：在事件处删失）"),
    ("consecutive days (dated by the last day of use)", "天（日期为最后使用日）"),
    ("no use for", "连续未使用"),
    ("device data", "设备数据"),
    ("form data: ", "表单数据："),
    ("dated by the withdrawal", "日期为退出日"),
    ("dated by the visit", "日期为访视日"),
    ("dated by", "日期取自"),
    ("(any reason)", "（任何原因）"),
    ("withdrawal", "退出"),
    ("log form", "日志表单"),
    ("where", "条件"),
    ("first", "首次"),
    # CONSORT exclusions (analysis/sap.py)
    ("not meeting eligibility criteria", "不符合入选标准"),
    ("other reasons (screening or randomization pending)", "其他原因（筛选或随机化尚未完成）"),
    ("other reasons", "其他原因"),
    ("declined to participate", "拒绝参加"),
    # not run (analysis/sap.py)
    ("multiple imputation is implemented for continuous endpoints, not",
     "多重插补仅适用于连续型终点，不适用于"),
    ("subgroups are estimated for ANCOVA/MMRM/logistic endpoints",
     "亚组分析仅适用于 ANCOVA/MMRM/logistic 终点"),
    ("too few observed outcomes to impute", "观测结局过少，无法插补"),
    ("no complete rows to analyse", "无完整数据行可分析"),
    ("no residual degrees of freedom", "无残差自由度"),
    ("no effect estimate", "无效应估计"),
    ("has a single level", "只有一个水平"),
    # source footnotes (dtx_trials/services/analyses.py)
    ("dtx-trials analysis run", "dtx-trials 分析运行"),
    # number formats (analysis/report_builder.py)
    ("SD not estimable", "标准差无法估计"),
    ("not estimable", "无法估计"),
    ("not reached", "未达到"),
    ("no data", "无数据"),
)

#: words of a model formula (``change ~ arm * visit + baseline``) and of the run footnote
WORDS: dict[str, str] = {
    "change": "变化值",
    "value": "测量值",
    "response": "应答",
    "arm": "组别",
    "visit": "访视",
    "baseline": "基线值",
    "subject": "受试者",
    "site": "中心",
    "age": "年龄",
    "time": "时间",
    "event": "事件",
    "eye": "眼",
    "and": "和",
}

_ORDERED = tuple(sorted(PHRASES, key=lambda pair: -len(pair[0])))
_WORD = re.compile(r"(?<![A-Za-z0-9_.-])(" + "|".join(WORDS) + r")(?![A-Za-z0-9_-])")


def translate(text: str) -> str:
    """Return ``text`` with every known English fragment and formula word in Chinese."""
    for en, zh in _ORDERED:
        if en in text:
            text = text.replace(en, zh)
    return _WORD.sub(lambda m: WORDS[m.group(1)], text)
