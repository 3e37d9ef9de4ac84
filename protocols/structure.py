"""The shape of the protocol YAML document, declared once.

The loader checks documents against these declarations (keys, types, enums, ranges) and
``schema.json_schema()`` turns the same declarations into a JSON Schema, so the two never drift.
Cross-references (ids, expressions, coverage) are checked by the loader afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecrf.model import FIELD_TYPES, MISSING_CODES

from . import model as m

ID_PATTERN = r"^[a-z][a-z0-9_]*$"
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


@dataclass(frozen=True)
class Str:
    description: str = ""
    pattern: str | None = None
    min_length: int = 0
    is_expression: bool = False


@dataclass(frozen=True)
class Int:
    description: str = ""
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True)
class Num:
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False


@dataclass(frozen=True)
class Bool:
    description: str = ""


@dataclass(frozen=True)
class Enum:
    values: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class NumOrStr:
    """A number, or an ISO date/time string (field min/max)."""

    description: str = ""


@dataclass(frozen=True)
class ListOf:
    item: Kind
    description: str = ""
    min_items: int = 0


@dataclass(frozen=True)
class Prop:
    name: str
    kind: Kind
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Obj:
    name: str
    props: tuple[Prop, ...]
    description: str = ""
    # further keys matching ``extra_pattern`` (e.g. a label's BCP-47 languages), each of kind
    # ``extra``; ``aliases`` maps another spelling of a key to its prop (``zh-Hans`` -> ``zh``)
    extra: Str | None = None
    extra_pattern: str | None = None
    aliases: tuple[tuple[str, str], ...] = ()

    def prop(self, name: str) -> Prop | None:
        return next((p for p in self.props if p.name == name), None)


Kind = Str | Int | Num | Bool | Enum | NumOrStr | ListOf | Obj


def _id(description: str) -> Str:
    return Str(description, pattern=ID_PATTERN, min_length=1)


def _expr(description: str) -> Str:
    return Str(description, min_length=1, is_expression=True)


# a BCP-47 language tag: language, optional script, region and variants (zh-Hant, pt-BR, ja)
BCP47_PATTERN = r"^[a-z]{2,3}(-[A-Z][a-z]{3})?(-([A-Z]{2}|[0-9]{3}))?(-[A-Za-z0-9]{5,8})*$"
EXTRA_LANGUAGE_LEAF = "<language>"

LABEL = Obj(
    "Label",
    (
        Prop("en", Str("English text", min_length=1), required=True),
        Prop("zh", Str("Simplified Chinese text, also written zh-Hans (falls back to English)")),
    ),
    "Text in the protocol's languages; English is required, any other BCP-47 language "
    "(zh-Hant, ja, ...) may be given when the protocol declares it under languages.",
    extra=Str("Text in this BCP-47 language (falls back to English)", min_length=1),
    extra_pattern=BCP47_PATTERN,
    aliases=(("zh-Hans", "zh"),),
)

CHOICE = Obj(
    "Choice",
    (
        Prop("code", Str("Stored code", pattern=CODE_PATTERN, min_length=1), required=True),
        Prop("label", LABEL, required=True),
    ),
)

EDIT_CHECK = Obj(
    "EditCheck",
    (
        Prop("id", _id("Check id, unique within the form"), required=True),
        Prop("condition", _expr("Expression that must hold; the message fires when false"),
             required=True),
        Prop("severity", Enum(("error", "warning"), "error blocks submission")),
        Prop("message", LABEL, required=True),
    ),
)

FIELD = Obj(
    "Field",
    (
        Prop("id", _id("Field id, unique across the whole protocol"), required=True),
        Prop("type", Enum(FIELD_TYPES, "Field type"), required=True),
        Prop("label", LABEL, required=True),
        Prop("help", LABEL),
        Prop("unit", Str("Unit shown after the input, e.g. mmol/mol")),
        Prop("required", Bool("Must be answered (or given a missing code) to submit")),
        Prop("min", NumOrStr("Minimum value (number, or ISO date/time)")),
        Prop("max", NumOrStr("Maximum value (number, or ISO date/time)")),
        Prop("decimals", Int("Decimal places kept for decimal fields", minimum=0, maximum=10)),
        Prop("max_length", Int("Maximum text length", minimum=1)),
        Prop("choices", ListOf(CHOICE, "Choices of single/multiple choice fields")),
        Prop("show_if", _expr("Branching: show the field only when this expression holds")),
        Prop("calculation", _expr("Derivation of a calculated field")),
        Prop("checks", ListOf(EDIT_CHECK, "Edit checks on this field")),
        Prop("allow_missing_codes",
             ListOf(Enum(tuple(MISSING_CODES), "Missing-data code"), "Missing codes allowed")),
        Prop("identifier", Bool("Direct identifier: encrypted at rest, never exported")),
        Prop("slider_labels", ListOf(LABEL, "Slider anchors: left, (middle), right")),
        Prop("classification", Enum(
            ("sensitive", "free_text", "quasi_identifier", "identifier"),
            "Data classification for de-identified exports: identifier (as identifier: true), "
            "quasi_identifier (dropped by safe_harbor), free_text (safe_harbor drops it, or "
            "scrubs it where the CDISC mapping needs it), sensitive (named in the export's "
            "audit event)")),
    ),
)

FORM = Obj(
    "Form",
    (
        Prop("id", _id("Form id"), required=True),
        Prop("title", LABEL, required=True),
        Prop(
            "respondent",
            Enum(
                ("site", "participant", "outcome_assessor"),
                "Who fills the form in (an outcome assessor: only assessors, never site staff)",
            ),
        ),
        Prop("repeating", Bool("Log form with any number of entries (AEs, con-meds)")),
        Prop("fields", ListOf(FIELD, "Fields in display order", min_items=1), required=True),
        Prop("checks", ListOf(EDIT_CHECK, "Form-level checks over several fields")),
    ),
)

VISIT = Obj(
    "Visit",
    (
        Prop("id", _id("Visit id"), required=True),
        Prop("label", LABEL, required=True),
        Prop("day", Int("Planned day offset from the anchor date"), required=True),
        Prop("window_before", Int("Days allowed before the planned day", minimum=0)),
        Prop("window_after", Int("Days allowed after the planned day", minimum=0)),
        Prop("anchor", Enum(("screening", "enrollment", "randomization"), "Day 0 of the offset")),
        Prop("forms", ListOf(_id("Form id"), "Forms collected at this visit")),
        Prop("reanchor", Bool("The actual date of this visit re-plans the later visits that "
                              "share its anchor (their day offsets count from it)")),
    ),
)

EPRO_WINDOW = Obj(
    "EproWindow",
    (
        Prop("form", _id("A participant-respondent form scheduled at the visit"), required=True),
        Prop("visit", _id("Visit id"), required=True),
        Prop("opens", Int("Days from the visit's date (actual, else planned) the link opens")),
        Prop("closes", Int("Days from the visit's date the questionnaire closes")),
        Prop("remind_after_hours", Int("E-mail a reminder this long after the link if still "
                                       "unanswered", minimum=1)),
        Prop("every_days", Int("Repeat the window every this many days (e.g. 7: weekly); "
                               "with times", minimum=1)),
        Prop("times", Int("How many windows in all, the first included; with every_days",
                          minimum=2)),
    ),
)

SCHEDULE = Obj(
    "Schedule",
    (
        Prop("visits", ListOf(VISIT, "Visits in chronological order", min_items=1),
             required=True),
        Prop("unscheduled_forms", ListOf(_id("Form id"), "Forms allowed at unscheduled visits")),
        Prop("epro", ListOf(EPRO_WINDOW, "Questionnaires whose links are issued automatically "
                            "(dtx epro tick)")),
    ),
)

ARM = Obj(
    "Arm",
    (
        Prop("code", Str("Arm code", pattern=ID_PATTERN, min_length=1), required=True),
        Prop("name", LABEL, required=True),
        Prop("ratio", Int("Allocation weight", minimum=1)),
        Prop("description", LABEL),
        Prop("is_control", Bool("Comparator arm (sham, usual care)")),
    ),
)

BLINDING = Obj(
    "Blinding",
    (
        Prop("level", Enum(m.BLINDING_LEVELS, "Masking level"), required=True),
        Prop("blinded_roles", ListOf(Enum(m.BLINDED_ROLES, "Role"), "Who is blinded")),
        Prop("activation_code_prefix",
             Str("Prefix of the app activation codes blinded roles see", pattern=CODE_PATTERN)),
        Prop("unblinding_notify",
             ListOf(Enum(m.STAFF_ROLES, "Role"),
                    "Roles e-mailed at once when a participant is unblinded in an emergency "
                    "(never told the arm); default sponsor_admin and monitor")),
        Prop("comparative_review",
             ListOf(Enum(m.COMPARATIVE_REVIEW_ROLES, "Role"),
                    "Blinded roles that may run a comparative blinded analysis (arms under "
                    "keyed dummy labels); otherwise blinded runs pool all arms")),
    ),
)

LEVEL = Obj(
    "Level",
    (
        Prop("code", Str("Level code", pattern=CODE_PATTERN, min_length=1), required=True),
        Prop("label", LABEL, required=True),
        Prop("when", _expr("Rule selecting this level (first match wins)")),
        Prop("otherwise", Bool("Catch-all level; must be last")),
    ),
)

FACTOR = Obj(
    "Factor",
    (
        Prop("id", _id("Factor id"), required=True),
        Prop("label", LABEL, required=True),
        Prop("field", _id("Screening field the level is derived from"), required=True),
        Prop("levels", ListOf(LEVEL, "Levels with their rules", min_items=2), required=True),
        Prop("weight", Num("Minimization weight", minimum=0)),
        Prop("visit", _id("Visit whose value is used (before randomization; default: the "
                          "first visit at or before randomization collecting the field)")),
    ),
)

CAPS = Obj(
    "Caps",
    (
        Prop("trial", Int("Maximum allocations in the trial", minimum=1)),
        Prop("per_site", Int("Maximum allocations per site", minimum=1)),
        Prop("per_stratum", Int("Maximum allocations per stratum", minimum=1)),
    ),
)

RANDOMIZATION = Obj(
    "Randomization",
    (
        Prop("method", Enum(m.RANDOMIZATION_METHODS, "Allocation method"), required=True),
        Prop("block_sizes",
             ListOf(Int("Block size in participants", minimum=1, maximum=1000),
                    "Sizes drawn at random")),
        Prop("factors", ListOf(FACTOR, "Stratification / minimization factors")),
        Prop("stratify_by_site", Bool("Site is a stratification (or minimization) factor")),
        Prop("site_weight", Num("Minimization weight of the site factor", minimum=0)),
        Prop("imbalance", Enum(m.IMBALANCE_MEASURES, "Minimization imbalance measure")),
        Prop("p", Num("Minimization: probability of the preferred arm(s)", minimum=0,
                      maximum=1, exclusive_minimum=True)),
        Prop("burn_in", Int("Minimization: first n allocations by simple randomization",
                            minimum=0)),
        Prop("overall_weight", Num("Minimization: weight of the overall-total imbalance term",
                                   minimum=0)),
        Prop("efron_p", Num("Efron biased coin p, in (0.5, 1]", minimum=0.5, maximum=1,
                            exclusive_minimum=True)),
        Prop("bsd_b", Int("Big stick: maximum tolerated imbalance", minimum=1)),
        Prop("bud_lambda", Int("Block urn: lambda", minimum=1)),
        Prop("mp_b", Int("Maximal procedure: maximum tolerated imbalance", minimum=1)),
        Prop("mp_block_length", Int("Maximal procedure: allocations per block (even)",
                                    minimum=2, maximum=1000)),
        Prop("caps", CAPS),
    ),
)

SITE = Obj(
    "Site",
    (
        Prop("code", Str("Site code", pattern=CODE_PATTERN, min_length=1), required=True),
        Prop("name", Str("Site name", min_length=1), required=True),
        Prop("country", Str("ISO 3166-1 alpha-2 country code (e.g. CN)")),
        Prop("timezone", Str("IANA time zone")),
        Prop("target", Int("Participants this site aims to enrol (dashboard target; the sum "
                           "over sites may differ from sample_size.n)", minimum=1)),
    ),
)

SITES = Obj(
    "Sites",
    (
        Prop("allow_runtime_sites", Bool("Sites may be added while the trial runs")),
        Prop("initial", ListOf(SITE, "Sites created at activation")),
    ),
)

CRITERION = Obj(
    "Criterion",
    (
        Prop("id", _id("Criterion id"), required=True),
        Prop("kind", Enum(m.CRITERION_KINDS, "inclusion must hold, exclusion must not"),
             required=True),
        Prop("text", LABEL, required=True),
        Prop("expression", _expr("Expression over screening fields"), required=True),
    ),
)

ADHERENCE = Obj(
    "Adherence",
    (
        Prop("metric", Enum(m.ADHERENCE_METRICS, "What is measured"), required=True),
        Prop("threshold", Num("Value the metric must reach"), required=True),
        Prop("daily_minimum", Num("Per-day minimum for a day to count", minimum=0)),
        Prop("window_start_visit", _id("Visit opening the window")),
        Prop("window_end_visit", _id("Visit closing the window")),
        Prop("condition", _expr("Extra condition over form fields")),
        Prop("defines_per_protocol", Bool("Adherent participants form the per-protocol set")),
    ),
)

STREAM = Obj(
    "DeviceStream",
    (
        Prop("id", _id("Stream id"), required=True),
        Prop("kind", Enum(m.STREAM_KINDS, "Kind of data"), required=True),
        Prop("label", LABEL, required=True),
        Prop("unit", Str("Unit of each value", min_length=1), required=True),
        Prop("cadence", Enum(m.CADENCES, "Expected frequency"), required=True),
        Prop("min", Num("Smallest plausible value")),
        Prop("max", Num("Largest plausible value")),
        Prop("adherence", ADHERENCE),
    ),
)

INTERCURRENT = Obj(
    "IntercurrentEvent",
    (
        Prop("id", _id("Event id"), required=True),
        Prop("description", LABEL, required=True),
        Prop("detected_by", Enum(m.EVENT_DETECTIONS, "How the event is found in the data"),
             required=True),
        Prop("condition", _expr("form_field / repeating_form: the event happened")),
        Prop("date_field", _id("form_field / repeating_form: date field of the event")),
        Prop("form", _id("repeating_form: the log form (e.g. con-meds)")),
        Prop("stream", _id("device_inactivity: device stream id")),
        Prop("inactive_days", Int("device_inactivity: consecutive days without use",
                                  minimum=1)),
        Prop("reasons", ListOf(Str("Text the withdrawal reason contains", min_length=1),
                               "withdrawal: reasons that count (any when absent)")),
    ),
    "An intercurrent event category and how it is detected in the captured data",
)

ESTIMAND_EVENT = Obj(
    "EstimandEvent",
    (
        Prop("event", _id("Intercurrent event id (top-level intercurrent_events)"),
             required=True),
        Prop("strategy", Enum(m.INTERCURRENT_STRATEGIES, "ICH E9(R1) strategy"), required=True),
        Prop("composite_value", Num("composite: outcome value the event stands for "
                                    "(binary models: 0 non-responder, 1 responder)")),
    ),
)

#: Keys of an older shape, refused with what to write instead: (object, key) -> hint.
RETIRED_KEYS: dict[tuple[str, str], str] = {
    ("EstimandEvent", "id"): (
        "intercurrent events are now declared once under the top-level "
        "'intercurrent_events' (id, description, detected_by, ...); here write "
        "'- {event: <id>, strategy: <strategy>}'"
    ),
    ("EstimandEvent", "description"): (
        "move the description to the top-level 'intercurrent_events' entry"
    ),
}

ESTIMAND = Obj(
    "Estimand",
    (
        Prop("population", LABEL, required=True),
        Prop("analysis_set", Enum(m.ANALYSIS_SETS, "Analysis set"), required=True),
        Prop("variable", LABEL, required=True),
        Prop("intercurrent_events", ListOf(ESTIMAND_EVENT, "Intercurrent events and strategies")),
        Prop("summary", LABEL, required=True),
    ),
    "ICH E9(R1) estimand attributes",
)

SENSITIVITY = Obj(
    "Sensitivity",
    (
        Prop("id", _id("Sensitivity analysis id"), required=True),
        Prop("method", Enum(m.SENSITIVITY_METHODS, "Method"), required=True),
        Prop("description", LABEL, required=True),
        Prop("supplementary", Bool(
            "True: a supplementary analysis (another estimand: other population or intercurrent-"
            "event strategy), reported apart from the sensitivity analyses of the same estimand; "
            "default: true for per_protocol, false otherwise")),
    ),
)

SUBGROUP = Obj(
    "Subgroup",
    (
        Prop("id", _id("Subgroup id"), required=True),
        Prop("label", LABEL, required=True),
        Prop("levels", ListOf(LEVEL, "Levels", min_items=2), required=True),
    ),
)

ANALYSIS = Obj(
    "Analysis",
    (
        Prop("model", Enum(m.ANALYSIS_MODELS, "Statistical model"), required=True),
        Prop("outcome_fields", ListOf(_id("Field id"), "Outcome field(s); per eye: right, left",
                                      min_items=1), required=True),
        Prop("visits", ListOf(_id("Visit id"), "Visit(s) analysed")),
        Prop("baseline_field", _id("Baseline covariate field")),
        Prop("baseline_visit", _id("Visit of the baseline value")),
        Prop("change_from_baseline", Bool("Analyse the change from baseline")),
        Prop("responder_if", _expr("Binary models: responder rule")),
        Prop("event_if", _expr("Survival models: the event happened")),
        Prop("event_date_field", _id("Survival models: date of the event")),
        Prop("covariates", ListOf(_id("Field id"), "Adjustment covariates")),
        Prop("strata", ListOf(_id("Factor id"), "Stratification factors in the model")),
        Prop("reference_arm", _id("Arm code of the comparator")),
        Prop("alpha", Num("Significance level", minimum=0, maximum=0.5, exclusive_minimum=True)),
        Prop("sidedness", Enum(m.SIDEDNESS, "Test sidedness")),
        Prop("multiplicity_order", Int("Position in the fixed testing sequence", minimum=1)),
        Prop("covariance", Enum(m.COVARIANCE_STRUCTURES, "MMRM covariance structure")),
        Prop("sensitivity", ListOf(SENSITIVITY, "Sensitivity analyses of the same estimand and "
                                   "supplementary analyses (supplementary: true)")),
        Prop("subgroups", ListOf(SUBGROUP, "Pre-specified subgroups")),
    ),
)

ENDPOINT = Obj(
    "Endpoint",
    (
        Prop("id", _id("Endpoint id"), required=True),
        Prop("name", LABEL, required=True),
        Prop("role", Enum(m.ENDPOINT_ROLES, "Role in the analysis plan"), required=True),
        Prop("estimand", ESTIMAND, required=True),
        Prop("analysis", ANALYSIS, required=True),
    ),
)

SAMPLE_SIZE = Obj(
    "SampleSize",
    (
        Prop("n", Int("Planned number randomized", minimum=1), required=True),
        Prop("power", Num("Power", minimum=0, maximum=1, exclusive_minimum=True)),
        Prop("alpha", Num("Significance level", minimum=0, maximum=0.5, exclusive_minimum=True)),
        Prop("dropout", Num("Expected dropout fraction", minimum=0, maximum=1)),
        Prop("assumptions", LABEL),
    ),
)

HYPOTHESIS = Obj(
    "Hypothesis",
    (
        Prop("id", _id("Hypothesis id"), required=True),
        Prop("endpoint", _id("Endpoint id"), required=True),
        Prop("arm", _id("Active arm compared with the endpoint's reference arm"),
             required=True),
        Prop("weight", Num("Initial weight (graphical, bonferroni); weights sum to at most 1",
                           minimum=0, maximum=1)),
    ),
)

TRANSITION = Obj(
    "Transition",
    (
        Prop("from", _id("Hypothesis id"), required=True),
        Prop("to", _id("Hypothesis id"), required=True),
        Prop("weight", Num("Share of the level passed on when 'from' is rejected", minimum=0,
                           maximum=1), required=True),
    ),
)

MULTIPLICITY = Obj(
    "Multiplicity",
    (
        Prop("procedure", Enum(m.MULTIPLICITY_PROCEDURES, "FWER-controlling procedure"),
             required=True),
        Prop("alpha", Num("Family-wise significance level", minimum=0, maximum=0.5,
                          exclusive_minimum=True)),
        Prop("hypotheses", ListOf(HYPOTHESIS, "The confirmatory family, in testing order",
                                  min_items=1), required=True),
        Prop("transitions", ListOf(TRANSITION, "graphical: the transition matrix, by edge")),
    ),
    "Confirmatory family (contrasts x endpoints) and its multiplicity procedure",
)

COMPREHENSION = Obj(
    "ComprehensionQuestion",
    (
        Prop("id", _id("Question id"), required=True),
        Prop("text", LABEL, required=True),
        Prop("choices", ListOf(CHOICE, "Answer options", min_items=2), required=True),
        Prop("answer", Str("Code of the right answer; signing waits for it", min_length=1),
             required=True),
    ),
)

ALERT = Obj(
    "AlertRule",
    (
        Prop("id", _id("Alert rule id"), required=True),
        Prop("form", _id("Form whose submitted answers are checked"), required=True),
        Prop("when", _expr("Expression over the form's fields; true raises the alert"),
             required=True),
        Prop("message", LABEL, required=True),
        Prop("notify", ListOf(Enum(m.STAFF_ROLES, "Role"),
                              "Told at once (site-bound roles at the participant's site); "
                              "default investigator, coordinator")),
        Prop("escalate_after_hours", Int("Escalate if nobody acknowledged within", minimum=1)),
        Prop("escalate_to", ListOf(Enum(m.STAFF_ROLES, "Role"),
                                   "Told on escalation; default sponsor_admin, monitor")),
    ),
)

SAFETY = Obj(
    "Safety",
    (
        Prop("form", _id("The adverse-event form")),
        Prop("serious_if", _expr("Expression over an adverse-event entry: serious (SAE)")),
        Prop("report_within_hours", Int("Expedited initial report due within (default 24)",
                                        minimum=1)),
        Prop("notify", ListOf(Enum(m.STAFF_ROLES, "Role"),
                              "E-mailed when an SAE is entered; default sponsor_admin, "
                              "investigator, monitor")),
        Prop("alerts", ListOf(ALERT, "Alert rules on answers")),
    ),
)

CONSENT = Obj(
    "Consent",
    (
        Prop("id", _id("Consent document id"), required=True),
        Prop("version", Str("Approved version label", min_length=1), required=True),
        Prop("language", Str("BCP 47 language tag, e.g. en, zh-CN", min_length=2),
             required=True),
        Prop("signer", Enum(m.SIGNERS, "Who signs")),
        Prop("title", LABEL, required=True),
        Prop("body", LABEL),
        Prop("comprehension", ListOf(COMPREHENSION, "Questions answered before a remote "
                                     "signature (every answer must be right)")),
    ),
)

CT_TERM = Obj(
    "CtTerm",
    (
        Prop("code", Str("Collected choice code", min_length=1), required=True),
        Prop("value", Str("Submission value of the codelist", min_length=1), required=True),
    ),
)

VARIABLE_MAP = Obj(
    "VariableMap",
    (
        Prop("variable", Str("SDTM variable, e.g. AESEV", pattern=r"^[A-Z][A-Z0-9]{0,7}$"),
             required=True),
        Prop("field", _id("Form field holding the value")),
        Prop("value", Str("Protocol constant (Assigned origin) instead of a field",
                          min_length=1)),
        Prop("codelist", Str("CDISC codelist C-code, e.g. C66769", pattern=r"^C[0-9]+$")),
        Prop("terms", ListOf(CT_TERM, "Collected code -> submission value")),
        Prop("nullable", Bool("Null when the data lack the field (else an export error)")),
    ),
)

TEST_MAP = Obj(
    "TestMap",
    (
        Prop("field", _id("Field (or device stream) holding the result"), required=True),
        Prop("testcd", Str("--TESTCD", pattern=r"^[A-Z][A-Z0-9_]{0,7}$"), required=True),
        Prop("test", Str("--TEST (at most 40 characters)", min_length=1), required=True),
        Prop("unit", Str("--ORRESU / --STRESU", min_length=1)),
        Prop("laterality", Enum(m.LATERALITIES, "--LAT (OE: eye)")),
    ),
)

DOMAIN_MAP = Obj(
    "DomainMap",
    (
        Prop("domain", Enum(m.SDTM_DOMAINS, "SDTM domain"), required=True),
        Prop("form", _id("Source form")),
        Prop("stream", _id("Source device stream (EX, XD)")),
        Prop("category", Str("--CAT of the records", min_length=1)),
        Prop("method", Str("--METHOD of the records (e.g. AUTOREFRACTION)", min_length=1)),
        Prop("date_field", _id("Date field giving --DTC (default: the actual visit date)")),
        Prop("variables", ListOf(VARIABLE_MAP, "Variables taken from fields or constants")),
        Prop("tests", ListOf(TEST_MAP, "Findings tests, one record each")),
    ),
)

CDISC = Obj(
    "Cdisc",
    (
        Prop("sdtmig", Enum(("3.4",), "SDTM implementation guide version"), required=True),
        Prop("ct_version", Str("CDISC controlled terminology package date",
                               pattern=r"^\d{4}-\d{2}-\d{2}$"), required=True),
        Prop("mappings", ListOf(DOMAIN_MAP, "Form/stream -> SDTM domain mappings")),
    ),
)

PRODUCT = Obj(
    "Product",
    (
        Prop("name", LABEL, required=True),
        Prop("version", Str("Product (software) version under investigation", min_length=1),
             required=True),
    ),
    "The digital therapeutic under investigation, printed on reports.",
)

AMENDMENT = Obj(
    "Amendment",
    (
        Prop("transition",
             Enum(m.AMENDMENT_TRANSITIONS,
                  "When participants already in the trial move to this version on its "
                  "activation: immediately, at their next visit, or after re-consent (every "
                  "consent document of this version signed); default immediately"),
             required=True),
    ),
)

PROTOCOL = Obj(
    "Protocol",
    (
        Prop("code", Str("Trial code", pattern=CODE_PATTERN, min_length=1), required=True),
        Prop("title", LABEL, required=True),
        Prop("phase", Enum(m.PHASES, "Development phase"), required=True),
        Prop("therapeutic_area", Str("Therapeutic area", min_length=1), required=True),
        Prop("registry_id", Str("Trial registry id, e.g. NCT01234567")),
        Prop("sponsor", Str("Sponsor (legal name), printed on reports", min_length=1)),
        Prop("product", PRODUCT),
        Prop("indication", LABEL),
        Prop("version", Str("Protocol version label", min_length=1), required=True),
        Prop(
            "languages",
            ListOf(
                Str("BCP-47 language tag", pattern=BCP47_PATTERN, min_length=2),
                "Languages the protocol's texts are written in besides English (e.g. zh-Hans, "
                "zh-Hant, ja); a text in an undeclared language is refused and the validator "
                "reports each declared language's coverage. Without it: English and zh-Hans.",
            ),
        ),
        Prop("description", LABEL),
        Prop("arms", ListOf(ARM, "Treatment arms", min_items=2), required=True),
        Prop("blinding", BLINDING),
        Prop("randomization", RANDOMIZATION, required=True),
        Prop("sites", SITES),
        Prop("eligibility", ListOf(CRITERION, "Inclusion and exclusion criteria")),
        Prop("schedule", SCHEDULE, required=True),
        Prop("forms", ListOf(FORM, "Case report forms", min_items=1), required=True),
        Prop("device_streams", ListOf(STREAM, "Device / app data streams")),
        Prop("intercurrent_events",
             ListOf(INTERCURRENT, "Intercurrent events and how each is detected")),
        Prop("endpoints", ListOf(ENDPOINT, "Endpoints and their analyses")),
        Prop("multiplicity", MULTIPLICITY),
        Prop("sample_size", SAMPLE_SIZE),
        Prop("consents", ListOf(CONSENT, "Consent and assent documents per language")),
        Prop("safety", SAFETY),
        Prop("cdisc", CDISC),
        Prop("amendment", AMENDMENT),
    ),
    "A dtx-trials protocol version.",
)
