"""Plain input data for the PDF report engine: what a report says, not how it is laid out.

The caller (the analysis service) maps its results into these frozen dataclasses; the engine
never sees statsmodels/lifelines objects. Every text is plain Unicode (no markup): the engine
escapes it and picks a font per character, so Chinese labels and site names may appear anywhere.

Numbering and captions follow ICH E3 §14/§16: a table or figure has a number ("14.2.1"), a title,
the analysis population and its N, footnotes and a source line (dataset, program, run time,
data cut), all printed with it (RPT-13).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal, TypeAlias

PageSize = Literal["letter", "a4"]
Language = Literal["en", "zh"]

#: Report topics that read a fixed dataset rather than an endpoint's own (an endpoint's tables
#: name the ADaM dataset its analysis read, recorded in its result by the SAP runner:
#: `analysis.adam.source_dataset`, the one naming rule the ADaM package follows too).
TOPIC_DATASETS = {
    "subject_level": "ADSL",  # populations, disposition, demographics, baseline, strata
    "adverse_events": "ADAE",
    "exposure": "EX",  # DTx use from the device data (SDTM EX; no ADaM exposure dataset yet)
}


class ReportError(Exception):
    """A report specification that cannot be rendered as a conforming PDF."""


class BlindingError(ReportError):
    """A blinded report specification that mentions a real arm label."""


class ConsortError(ReportError):
    """CONSORT flow counts that do not add up (CON-02..CON-06)."""


# --- figure data -------------------------------------------------------------------------


@dataclass(frozen=True)
class SurvivalCurve:
    """One arm's Kaplan-Meier step function.

    ``times`` and ``survival`` are the step points (time 0 with survival 1.0 first);
    ``censor_times`` are drawn as tick marks; ``at_risk`` holds the number at risk at each of
    the figure's ``risk_times``.
    """

    label: str
    times: tuple[float, ...]
    survival: tuple[float, ...]
    censor_times: tuple[float, ...] = ()
    at_risk: tuple[int, ...] = ()


@dataclass(frozen=True)
class KaplanMeierData:
    """A Kaplan-Meier plot with the numbers at risk printed under the time axis."""

    curves: tuple[SurvivalCurve, ...]
    risk_times: tuple[float, ...]
    time_label: str = "Time (days)"
    survival_label: str = "Probability of no event"


@dataclass(frozen=True)
class ForestRow:
    """One subgroup level of a forest plot (``interaction_p`` on the first level of a factor)."""

    subgroup: str
    level: str
    n: int
    estimate: float
    ci_low: float
    ci_high: float
    interaction_p: float | None = None


@dataclass(frozen=True)
class ForestData:
    """A subgroup forest plot: estimate and CI per level, reference line at ``null_value``."""

    rows: tuple[ForestRow, ...]
    estimate_label: str = "Difference (95% CI)"
    null_value: float = 0.0
    favours_left: str = ""
    favours_right: str = ""
    is_prespecified: bool = True


@dataclass(frozen=True)
class MeanChangeSeries:
    """One arm's mean change from baseline per visit with the half-width of its error bar."""

    label: str
    times: tuple[float, ...]
    means: tuple[float, ...]
    errors: tuple[float, ...]


@dataclass(frozen=True)
class MeanChangeData:
    """Mean change from baseline over time with error bars (``error_label`` says which)."""

    series: tuple[MeanChangeSeries, ...]
    time_label: str = "Week"
    value_label: str = "Mean change from baseline"
    error_label: str = "Error bars: 95% CI"


@dataclass(frozen=True)
class ConsortArm:
    """The per-arm boxes of a CONSORT 2010 flow diagram; reasons map text to a count."""

    label: str
    n_allocated: int
    n_received: int | None  # None: the protocol records no use of the intervention
    n_not_received: int | None
    not_received_reasons: Mapping[str, int] = field(default_factory=dict)
    n_lost_to_follow_up: int = 0
    lost_reasons: Mapping[str, int] = field(default_factory=dict)
    n_discontinued: int = 0
    discontinued_reasons: Mapping[str, int] = field(default_factory=dict)
    n_analysed: int = 0
    n_excluded_from_analysis: int = 0
    excluded_from_analysis_reasons: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ConsortData:
    """A CONSORT 2010 flow diagram: enrolment boxes and one column per arm."""

    n_assessed: int
    n_excluded: int
    excluded_reasons: Mapping[str, int]
    n_randomized: int
    arms: tuple[ConsortArm, ...]


FigureData: TypeAlias = KaplanMeierData | ForestData | MeanChangeData | ConsortData

# --- blocks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextBlock:
    """A narrative paragraph (plain text, 10 pt)."""

    text: str


@dataclass(frozen=True)
class TableBlock:
    """A numbered summary table; its caption is ``Table <number> <title> (<population>, N = n)``."""

    number: str
    title: str
    population: str
    n: int
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    footnotes: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class ListingBlock:
    """A numbered data listing that may run over many pages, its header repeated on each."""

    number: str
    title: str
    population: str
    n: int
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    footnotes: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class FigureBlock:
    """A numbered vector figure (KM, forest, mean change or CONSORT) with its caption."""

    number: str
    title: str
    population: str
    n: int
    data: FigureData
    footnotes: tuple[str, ...] = ()
    source: str = ""

    @property
    def kind(self) -> str:
        """Return ``km``, ``forest``, ``mean_change`` or ``consort``."""
        if isinstance(self.data, KaplanMeierData):
            return "km"
        if isinstance(self.data, ForestData):
            return "forest"
        if isinstance(self.data, MeanChangeData):
            return "mean_change"
        return "consort"


@dataclass(frozen=True)
class Section:
    """A numbered heading with its content; blocks may nest subsections (outline depth ≤ 4).

    ``landscape`` puts a top-level section on landscape pages (wide listings); subsections
    inherit it (a subsection of a portrait section cannot be landscape).
    """

    number: str
    title: str
    blocks: tuple[Block, ...] = ()
    landscape: bool = False


Block: TypeAlias = TextBlock | TableBlock | ListingBlock | FigureBlock | Section


@dataclass(frozen=True)
class ReportSpec:
    """Everything a submission-ready statistical report shows (title page + ordered sections).

    ``generated_at`` is the UTC run time (a parameter: the engine never reads the clock);
    ``software_versions`` maps package name to version; ``data_snapshot_sha256`` identifies
    the frozen data the results come from.
    """

    trial_code: str
    trial_title: str
    product_name: str
    product_version: str
    indication: str
    design: str
    sponsor: str
    phase: str
    protocol_version: str
    data_cutoff_on: date | None
    blinded: bool
    generated_at: datetime
    software_versions: Mapping[str, str]
    data_snapshot_sha256: str
    gcp_statement: str
    sections: tuple[Section, ...]
    report_title: str = "Statistical Analysis Report"
    author: str = "dtx-trials"
    study_start_on: date | None = None
    study_completion_on: date | None = None
    page_size: PageSize = "letter"
    language: Language = "en"
    #: a statement of the database lock state the system knows ("records locked: ...")
    data_status: str = ""
    #: draft/interim: not every record is locked; every page says so in its header
    is_draft: bool = False
    #: whether and by whom the report is signed (a final report is signed after rendering)
    signature_status: str = ""
    #: data printed as recorded (verbatim AE terms, free-text reasons): not fixed texts, so
    #: the Chinese edition's lint does not ask for a translation
    recorded_texts: tuple[str, ...] = ()
