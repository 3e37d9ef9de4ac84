"""The typed protocol model: frozen dataclasses built by the loader from a YAML protocol document.

Forms and the visit schedule reuse the eCRF contract of ``ecrf.model`` unchanged; everything else
(arms, blinding, randomization, eligibility, device streams, endpoints and the statistical analysis
plan) lives here. Objects are plain data: no I/O, no evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd
from typing import Literal

from ecrf.model import Choice, FieldDef, FormDef, Label, Schedule, VisitDef
from ecrf.model import Criterion as Criterion  # eligibility criteria use the eCRF contract

Phase = Literal["pilot", "feasibility", "pivotal", "phase_1", "phase_2", "phase_3", "phase_4", "na"]
BlindingLevel = Literal["open", "single", "double"]
BlindedRole = Literal[
    "participant", "investigator", "outcome_assessor", "coordinator", "statistician", "sponsor"
]
RandomizationMethod = Literal[
    "simple", "permuted_block", "minimization", "efron", "big_stick", "block_urn", "maximal",
    "list",
]
#: Trial roles a protocol can name (e.g. who is notified of an emergency unblinding).
ComparativeReviewRole = Literal["statistician"]  # the blinded roles that run analyses
StaffRole = Literal[
    "sponsor_admin", "investigator", "coordinator", "monitor", "data_manager", "statistician",
    "unblinded_statistician", "auditor",
]
ImbalanceMeasure = Literal["range", "variance"]
CriterionKind = Literal["inclusion", "exclusion"]
StreamKind = Literal[
    "app_usage", "training_minutes", "step_count", "outdoor_time", "screen_time", "glucose",
    "heart_rate", "sleep", "custom",
]
#: the stream kinds that record use of the DTx itself: a randomized participant with a day of
#: use on one of them received the allocated DTx (disposition, CONSORT)
USE_STREAM_KINDS = frozenset({"app_usage", "training_minutes"})
Cadence = Literal["continuous", "hourly", "daily", "weekly", "per_session"]
AdherenceMetric = Literal["fraction_of_days_meeting_minimum", "mean_per_day", "total"]
EndpointRole = Literal["primary", "key_secondary", "secondary", "exploratory", "safety"]
AnalysisSet = Literal["itt", "fas", "per_protocol", "safety", "completers"]
IntercurrentStrategy = Literal[
    "treatment_policy", "hypothetical", "composite", "while_on_treatment", "principal_stratum"
]
#: How an intercurrent event is found in the captured data.
EventDetection = Literal["form_field", "repeating_form", "device_inactivity", "withdrawal"]
MultiplicityProcedure = Literal["fixed_sequence", "holm", "hochberg", "bonferroni", "graphical"]
AnalysisModel = Literal[
    "ancova", "mmrm", "logistic", "risk_difference", "cmh", "km_logrank", "cox", "gee_per_eye"
]
Sidedness = Literal["two_sided", "one_sided"]
CovarianceStructure = Literal["unstructured", "compound_symmetry", "ar1", "toeplitz"]
SensitivityMethod = Literal[
    "complete_case", "multiple_imputation_mar", "reference_based_mi", "tipping_point",
    "per_protocol", "alternative_model", "other",
]
Signer = Literal["participant", "guardian", "legally_authorized_representative"]

PHASES: tuple[str, ...] = Phase.__args__  # type: ignore[attr-defined]
BLINDING_LEVELS: tuple[str, ...] = BlindingLevel.__args__  # type: ignore[attr-defined]
BLINDED_ROLES: tuple[str, ...] = BlindedRole.__args__  # type: ignore[attr-defined]
COMPARATIVE_REVIEW_ROLES: tuple[str, ...] = ComparativeReviewRole.__args__  # type: ignore[attr-defined]
RANDOMIZATION_METHODS: tuple[str, ...] = RandomizationMethod.__args__  # type: ignore[attr-defined]
IMBALANCE_MEASURES: tuple[str, ...] = ImbalanceMeasure.__args__  # type: ignore[attr-defined]
CRITERION_KINDS: tuple[str, ...] = CriterionKind.__args__  # type: ignore[attr-defined]
STREAM_KINDS: tuple[str, ...] = StreamKind.__args__  # type: ignore[attr-defined]
CADENCES: tuple[str, ...] = Cadence.__args__  # type: ignore[attr-defined]
ADHERENCE_METRICS: tuple[str, ...] = AdherenceMetric.__args__  # type: ignore[attr-defined]
ENDPOINT_ROLES: tuple[str, ...] = EndpointRole.__args__  # type: ignore[attr-defined]
ANALYSIS_SETS: tuple[str, ...] = AnalysisSet.__args__  # type: ignore[attr-defined]
INTERCURRENT_STRATEGIES: tuple[str, ...] = IntercurrentStrategy.__args__  # type: ignore[attr-defined]
EVENT_DETECTIONS: tuple[str, ...] = EventDetection.__args__  # type: ignore[attr-defined]
MULTIPLICITY_PROCEDURES: tuple[str, ...] = MultiplicityProcedure.__args__  # type: ignore[attr-defined]
ANALYSIS_MODELS: tuple[str, ...] = AnalysisModel.__args__  # type: ignore[attr-defined]
SIDEDNESS: tuple[str, ...] = Sidedness.__args__  # type: ignore[attr-defined]
COVARIANCE_STRUCTURES: tuple[str, ...] = CovarianceStructure.__args__  # type: ignore[attr-defined]
SENSITIVITY_METHODS: tuple[str, ...] = SensitivityMethod.__args__  # type: ignore[attr-defined]
SIGNERS: tuple[str, ...] = Signer.__args__  # type: ignore[attr-defined]
AmendmentTransition = Literal["immediately", "next_visit", "after_reconsent"]
AMENDMENT_TRANSITIONS: tuple[str, ...] = AmendmentTransition.__args__  # type: ignore[attr-defined]
STAFF_ROLES: tuple[str, ...] = StaffRole.__args__  # type: ignore[attr-defined]
#: Who is told of an emergency unblinding when the protocol does not say (spec §1.7: sponsor
#: and medical monitor at once).
DEFAULT_UNBLINDING_NOTIFY: tuple[StaffRole, ...] = ("sponsor_admin", "monitor")

#: Models whose outcome is binary (a responder rule turns the outcome into yes/no).
BINARY_MODELS = frozenset({"logistic", "risk_difference", "cmh"})
#: Models whose outcome is a time to event.
SURVIVAL_MODELS = frozenset({"km_logrank", "cox"})


@dataclass(frozen=True)
class Arm:
    """A treatment arm; ``ratio`` is its integer allocation weight."""

    code: str
    name: Label
    ratio: int = 1
    description: Label | None = None
    is_control: bool = False


@dataclass(frozen=True)
class Blinding:
    """Who does not know the allocation; blinded roles see an activation code, never the arm."""

    level: BlindingLevel = "open"
    blinded_roles: tuple[BlindedRole, ...] = ()
    activation_code_prefix: str | None = None
    # Roles e-mailed when a participant is unblinded in an emergency (never with the arm);
    # None when the protocol does not say: DEFAULT_UNBLINDING_NOTIFY in a blinded trial.
    unblinding_notify: tuple[StaffRole, ...] | None = None
    # Blinded roles that may request a comparative blinded analysis (arms under keyed dummy
    # labels); every other blinded run is a pooled data review with no comparison of groups.
    comparative_review: tuple[ComparativeReviewRole, ...] = ()

    @property
    def roles_notified_of_unblinding(self) -> tuple[StaffRole, ...]:
        """Return the roles told of an emergency unblinding (none in an open-label trial)."""
        if self.level == "open":
            return ()
        if self.unblinding_notify is None:
            return DEFAULT_UNBLINDING_NOTIFY
        return self.unblinding_notify


@dataclass(frozen=True)
class StratumLevel:
    """One level of a factor: taken when ``when`` is true, or by default when ``is_otherwise``.

    Levels are tried in declaration order; the first match wins.
    """

    code: str
    label: Label
    when: str | None = None
    is_otherwise: bool = False


@dataclass(frozen=True)
class StratificationFactor:
    """A stratification or minimization factor derived from the value of ``field`` recorded at
    ``visit`` (None: the first visit at or before randomization that collects the field)."""

    id: str
    label: Label
    field: str
    levels: tuple[StratumLevel, ...]
    weight: float = 1.0  # minimization weight v_f; ignored by stratified designs
    visit: str | None = None

    @property
    def level_codes(self) -> tuple[str, ...]:
        return tuple(level.code for level in self.levels)


@dataclass(frozen=True)
class AllocationCaps:
    """Optional ceilings on allocations, checked inside the randomization transaction."""

    trial: int | None = None
    per_site: int | None = None
    per_stratum: int | None = None


@dataclass(frozen=True)
class RandomizationSpec:
    """The randomization model of a protocol version (randomization-methods.md §1)."""

    method: RandomizationMethod
    block_sizes: tuple[int, ...] = ()
    factors: tuple[StratificationFactor, ...] = ()
    stratify_by_site: bool = False
    site_weight: float = 1.0  # minimization weight of the site factor when stratify_by_site
    imbalance: ImbalanceMeasure = "range"
    p: float | None = None  # minimization: probability of the preferred set
    burn_in: int = 0  # minimization: first n participants by simple randomization at the ratio
    overall_weight: float = 0.0  # minimization: weight of the overall-total imbalance term
    efron_p: float | None = None
    bsd_b: int | None = None  # big stick: maximum tolerated imbalance
    bud_lambda: int | None = None  # block urn: lambda
    mp_b: int | None = None  # maximal procedure: maximum tolerated imbalance
    mp_block_length: int | None = None  # maximal procedure: allocations per block (even)
    caps: AllocationCaps = field(default_factory=AllocationCaps)

    def factor(self, factor_id: str) -> StratificationFactor:
        for factor in self.factors:
            if factor.id == factor_id:
                return factor
        raise KeyError(factor_id)


@dataclass(frozen=True)
class Site:
    code: str
    name: str
    country: str | None = None
    timezone: str | None = None
    # participants this site aims to enrol (the sponsor dashboard's per-site target); the sum
    # over sites may differ from sample_size.n (over-recruiting sites, sites added later)
    target: int | None = None


@dataclass(frozen=True)
class SitePolicy:
    """Sites known at activation, and whether more may be added while the trial runs."""

    allow_runtime_sites: bool = True
    initial_sites: tuple[Site, ...] = ()


@dataclass(frozen=True)
class AdherenceRule:
    """A participant is adherent when ``metric`` over the window reaches ``threshold``.

    For ``fraction_of_days_meeting_minimum`` the metric is (days with value ≥ ``daily_minimum``)
    / (expected days between the window visits), so ``threshold`` is a fraction in (0, 1].
    ``condition`` is an optional extra requirement over form fields.
    """

    metric: AdherenceMetric
    threshold: float
    daily_minimum: float | None = None
    window_start_visit: str | None = None
    window_end_visit: str | None = None
    condition: str | None = None
    defines_per_protocol: bool = False


@dataclass(frozen=True)
class DeviceStream:
    """Data the DTx app or a wearable sends, with the expected cadence and plausible range."""

    id: str
    kind: StreamKind
    label: Label
    unit: str
    cadence: Cadence
    min: float | None = None
    max: float | None = None
    adherence: AdherenceRule | None = None


@dataclass(frozen=True)
class IntercurrentEvent:
    """An intercurrent event category and how it is detected in the data (declared once,
    used by any estimand).

    - ``form_field``: the first visit whose values satisfy ``condition``; the date is
      ``date_field`` of that visit, else the visit's date.
    - ``repeating_form``: the earliest record of log ``form`` (e.g. con-meds) satisfying
      ``condition`` (every record when none), dated by its ``date_field``.
    - ``device_inactivity``: ``inactive_days`` consecutive days without use (no value > 0) of
      device ``stream`` after randomization; the date is the last day of use (randomization
      day when never used).
    - ``withdrawal``: the participant withdrew (reason containing one of ``reasons``, any
      reason when none); the date is the withdrawal date.
    """

    id: str
    description: Label
    detected_by: EventDetection
    condition: str | None = None
    date_field: str | None = None
    form: str | None = None
    stream: str | None = None
    inactive_days: int | None = None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class EstimandEvent:
    """One intercurrent event of an estimand and the strategy that handles it (ICH E9(R1))."""

    event: str
    strategy: IntercurrentStrategy
    composite_value: float | None = None  # composite: the outcome the event stands for


@dataclass(frozen=True)
class Estimand:
    """The five attributes of ICH E9(R1) §A.3.2; the treatment attribute is the arm contrast."""

    population: Label
    analysis_set: AnalysisSet
    variable: Label
    intercurrent_events: tuple[EstimandEvent, ...]
    summary: Label


@dataclass(frozen=True)
class Hypothesis:
    """One confirmatory hypothesis: ``arm`` versus the endpoint's reference arm."""

    id: str
    endpoint: str
    arm: str
    weight: float | None = None  # graphical / weighted Bonferroni: initial local weight


@dataclass(frozen=True)
class Transition:
    """Graphical procedure: share ``weight`` of a rejected hypothesis' level passes on."""

    source: str
    target: str
    weight: float


@dataclass(frozen=True)
class MultiplicitySpec:
    """The confirmatory family (contrasts x endpoints) and the procedure controlling FWER."""

    procedure: MultiplicityProcedure
    hypotheses: tuple[Hypothesis, ...]
    alpha: float = 0.05
    transitions: tuple[Transition, ...] = ()


@dataclass(frozen=True)
class SensitivityAnalysis:
    """A sensitivity analysis of the primary estimand, or (``supplementary``) an analysis of
    another estimand (ICH E9(R1) A.5.2/A.5.3): they are reported in separate tables."""

    id: str
    method: SensitivityMethod
    description: Label
    supplementary: bool | None = None  # None: by method (per_protocol is supplementary)

    @property
    def is_supplementary(self) -> bool:
        """Return whether this analysis targets another estimand than the primary one."""
        if self.supplementary is not None:
            return self.supplementary
        return self.method == "per_protocol"


@dataclass(frozen=True)
class Subgroup:
    """A pre-specified subgroup: participants fall in the first level whose rule holds."""

    id: str
    label: Label
    levels: tuple[StratumLevel, ...]


@dataclass(frozen=True)
class AnalysisSpec:
    """How an endpoint is analysed (the statistical analysis plan entry)."""

    model: AnalysisModel
    outcome_fields: tuple[str, ...]
    visits: tuple[str, ...] = ()
    baseline_field: str | None = None  # default: the outcome field itself at baseline_visit
    baseline_visit: str | None = None
    change_from_baseline: bool = False
    responder_if: str | None = None  # binary models: when is a participant a responder
    event_if: str | None = None  # survival models: when did the event happen
    event_date_field: str | None = None
    covariates: tuple[str, ...] = ()
    strata: tuple[str, ...] = ()  # stratification factor ids
    reference_arm: str | None = None
    alpha: float = 0.05
    sidedness: Sidedness = "two_sided"
    multiplicity_order: int | None = None
    covariance: CovarianceStructure | None = None  # mmrm only
    sensitivity: tuple[SensitivityAnalysis, ...] = ()
    subgroups: tuple[Subgroup, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    id: str
    name: Label
    role: EndpointRole
    estimand: Estimand
    analysis: AnalysisSpec


@dataclass(frozen=True)
class SampleSize:
    n: int
    power: float | None = None
    alpha: float | None = None
    dropout: float | None = None
    assumptions: Label | None = None


@dataclass(frozen=True)
class ComprehensionQuestion:
    """A question the signer answers before a remote signature; ``answer`` is the right code."""

    id: str
    text: Label
    choices: tuple[Choice, ...]
    answer: str


@dataclass(frozen=True)
class ConsentDocument:
    """One approved consent (or assent) text version in one language."""

    id: str
    version: str
    language: str
    signer: Signer
    title: Label
    body: Label | None = None  # the text the signer reads (remote eConsent page and PDF)
    comprehension: tuple[ComprehensionQuestion, ...] = ()


@dataclass(frozen=True)
class AlertRule:
    """An answer that signals risk (e.g. a self-harm item above 0): on submission the site is
    alerted, must acknowledge, and ``escalate_to`` is told if nobody has within the hours."""

    id: str
    form: str
    when: str
    message: Label
    notify: tuple[StaffRole, ...] = ("investigator", "coordinator")
    escalate_after_hours: int | None = None
    escalate_to: tuple[StaffRole, ...] = ("sponsor_admin", "monitor")


#: SDTM domains a protocol can map data to (SDTMIG 3.4; XD is the sponsor-defined device
#: findings domain for device/app streams).
SDTM_DOMAINS = ("DM", "AE", "DS", "CM", "VS", "LB", "QS", "OE", "EX", "XD")
FINDINGS_DOMAINS = ("VS", "LB", "QS", "OE", "XD")
LATERALITIES = ("RIGHT", "LEFT", "BILATERAL")


@dataclass(frozen=True)
class CtTerm:
    """One collected code and the controlled-terminology submission value it maps to."""

    code: str
    value: str


@dataclass(frozen=True)
class VariableMap:
    """Where one SDTM variable comes from: a form field (``field``) or a protocol constant
    (``value``); ``codelist`` names the CDISC codelist (NCI C-code) of its values and ``terms``
    map each collected choice code to a submission value. ``nullable``: the variable may be
    null when the participant's data lack the field (otherwise that is an export error)."""

    variable: str
    field: str | None = None
    value: str | None = None
    codelist: str | None = None
    terms: tuple[CtTerm, ...] = ()
    nullable: bool = False


@dataclass(frozen=True)
class TestMap:
    """A findings test: the field (or device stream) whose value is the result."""

    field: str
    testcd: str
    test: str
    unit: str | None = None
    laterality: str | None = None


@dataclass(frozen=True)
class DomainMap:
    """The SDTM mapping of one form (or device stream) into one domain."""

    domain: str
    form: str | None = None
    stream: str | None = None
    category: str | None = None
    method: str | None = None
    date_field: str | None = None
    variables: tuple[VariableMap, ...] = ()
    tests: tuple[TestMap, ...] = ()


@dataclass(frozen=True)
class CdiscSpec:
    """The protocol's CDISC mapping: standards pinned, and form fields → SDTM."""

    sdtmig: str
    ct_version: str
    mappings: tuple[DomainMap, ...] = ()

    def domain_maps(self, domain: str) -> tuple[DomainMap, ...]:
        """Return the mappings into ``domain``."""
        return tuple(m for m in self.mappings if m.domain == domain)


@dataclass(frozen=True)
class SafetySpec:
    """Serious adverse events: which entries of which form are serious, the expedited-report
    clock, who is told at once; and the alert rules on answers."""

    form: str | None = None
    serious_if: str | None = None
    report_within_hours: int = 24
    notify: tuple[StaffRole, ...] = ("sponsor_admin", "investigator", "monitor")
    alerts: tuple[AlertRule, ...] = ()


@dataclass(frozen=True)
class Product:
    """The DTx product (and its software version) a trial investigates."""

    name: Label
    version: str


@dataclass(frozen=True)
class AmendmentSpec:
    """How participants already in the trial move to this version when it is activated as an
    amendment: ``immediately``; at their ``next_visit`` (the next visit whose date is recorded
    or whose first data is entered); or ``after_reconsent`` (once every consent document of
    this version is signed). Until moved, a participant's forms follow their own version."""

    transition: AmendmentTransition


@dataclass(frozen=True)
class Protocol:
    """A complete, validated protocol version."""

    code: str
    title: Label
    phase: Phase
    therapeutic_area: str
    version: str
    arms: tuple[Arm, ...]
    randomization: RandomizationSpec
    schedule: Schedule
    forms: tuple[FormDef, ...]
    registry_id: str | None = None
    # BCP-47 tags of the languages the texts are written in besides English (None: not
    # declared, meaning English and Simplified Chinese)
    languages: tuple[str, ...] | None = None
    description: Label | None = None
    sponsor: str | None = None
    product: Product | None = None
    indication: Label | None = None
    blinding: Blinding = field(default_factory=Blinding)
    sites: SitePolicy = field(default_factory=SitePolicy)
    eligibility: tuple[Criterion, ...] = ()
    device_streams: tuple[DeviceStream, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    sample_size: SampleSize | None = None
    consents: tuple[ConsentDocument, ...] = ()
    intercurrent_events: tuple[IntercurrentEvent, ...] = ()
    multiplicity: MultiplicitySpec | None = None

    def intercurrent_event(self, event_id: str) -> IntercurrentEvent:
        """Return the intercurrent event with this id; raise KeyError when there is none."""
        for event in self.intercurrent_events:
            if event.id == event_id:
                return event
        raise KeyError(event_id)
    safety: SafetySpec = field(default_factory=SafetySpec)
    cdisc: CdiscSpec | None = None
    amendment: AmendmentSpec | None = None

    def form(self, form_id: str) -> FormDef:
        """Return the form with this id; raise KeyError when there is none."""
        for form in self.forms:
            if form.id == form_id:
                return form
        raise KeyError(form_id)

    def arm(self, code: str) -> Arm:
        """Return the arm with this code; raise KeyError when there is none."""
        for arm in self.arms:
            if arm.code == code:
                return arm
        raise KeyError(code)

    def visit(self, visit_id: str) -> VisitDef:
        """Return the visit with this id; raise KeyError when there is none."""
        for visit in self.schedule.visits:
            if visit.id == visit_id:
                return visit
        raise KeyError(visit_id)

    def endpoint(self, endpoint_id: str) -> Endpoint:
        """Return the endpoint with this id; raise KeyError when there is none."""
        for endpoint in self.endpoints:
            if endpoint.id == endpoint_id:
                return endpoint
        raise KeyError(endpoint_id)

    def field_index(self) -> dict[str, tuple[FormDef, FieldDef]]:
        """Map every field id (unique protocol-wide) to its form and definition."""
        return {f.id: (form, f) for form in self.forms for f in form.fields}

    def field(self, field_id: str) -> FieldDef:
        """Return the field with this id, from whichever form holds it; raise KeyError if none."""
        return self.field_index()[field_id][1]

    def factor_visit(self, factor: StratificationFactor) -> str | None:
        """Return the visit whose value of the factor's field is used: the factor's ``visit``,
        else the first visit at or before randomization that collects the field."""
        if factor.visit is not None:
            return factor.visit
        forms = {f.id for f in self.forms if any(x.id == factor.field for x in f.fields)}
        for visit in self.schedule.visits:
            if (visit.anchor != "randomization" or visit.day <= 0) and forms & set(visit.forms):
                return visit.id
        return None

    def visits_of_form(self, form_id: str) -> tuple[str, ...]:
        """Return the ids of the visits at which this form is scheduled, in schedule order."""
        return tuple(v.id for v in self.schedule.visits if form_id in v.forms)

    @property
    def reduced_ratio(self) -> tuple[int, ...]:
        """Arm ratios divided by their greatest common divisor (4:2 behaves as 2:1)."""
        divisor = 0
        for arm in self.arms:
            divisor = gcd(divisor, arm.ratio)
        return tuple(arm.ratio // divisor for arm in self.arms) if divisor else ()

    @property
    def primary_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.role == "primary")

    @property
    def control_arm(self) -> Arm | None:
        return next((arm for arm in self.arms if arm.is_control), None)
