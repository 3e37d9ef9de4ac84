"""Form definitions as plain frozen data: the contract between protocols/ (which builds them
from YAML) and the form engine (which validates, derives and renders with them).

Conventions fixed here:
- Stored values are JSON scalars: integers and decimals as numbers, text as str, dates as
  ``YYYY-MM-DD``, datetimes as ISO 8601 with offset, times as ``HH:MM[:SS]``, yes/no as
  ``"1"``/``"0"``, single choice as the choice code (str), multiple choice as a sorted list of
  codes, slider as a number.
- A missing-data code is stored as ``{"missing": code}`` with code in ``MISSING_CODES``; it is
  distinct from an absent key ("not asked") and from an unchecked multiple choice (``[]``).
- ``EditCheck.condition`` must evaluate true; when it evaluates false the message is raised
  (error blocks submission, warning needs an acknowledgement or becomes a query). A condition that
  evaluates to blank (inputs missing) does not fire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FieldType = Literal[
    "integer",
    "decimal",
    "text",
    "date",
    "datetime",
    "time",
    "yesno",
    "single_choice",
    "multiple_choice",
    "slider",
    "calculated",
    "file",
    "signature",
    "descriptive",
]
FIELD_TYPES: tuple[str, ...] = FieldType.__args__  # type: ignore[attr-defined]

Severity = Literal["error", "warning"]
Respondent = Literal["site", "participant", "outcome_assessor"]
Anchor = Literal["screening", "enrollment", "randomization"]

MISSING_CODES: dict[str, str] = {
    "not_done": "Not done",
    "unknown": "Unknown",
    "not_applicable": "Not applicable",
}


def _traditional(language: str) -> bool:
    tag = language.lower()
    return tag.startswith("zh") and (
        "hant" in tag or ("hans" not in tag and tag.split("-")[-1] in ("tw", "hk", "mo"))
    )


@dataclass(frozen=True)
class Label:
    """Text in several languages: English is required; ``zh`` is Simplified Chinese (written
    ``zh`` or ``zh-Hans`` in a protocol); ``others`` holds any other BCP-47 language, e.g.
    ``(("ja", "..."), ("zh-Hant", "..."))``, sorted by tag."""

    en: str
    zh: str | None = None
    others: tuple[tuple[str, str], ...] = ()

    def text_in(self, language: str) -> str | None:
        """The text written in exactly this language (``zh``/``zh-Hans`` alike), or None."""
        tag = language.lower()
        if tag == "en":
            return self.en
        if tag in ("zh", "zh-hans"):
            return self.zh
        return next((text for lang, text in self.others if lang.lower() == tag), None)

    def get(self, language: str) -> str:
        """The text for a reader of ``language``: that language, else its primary language
        (``ja-JP`` reads ``ja``), else for Chinese the other script, else English."""
        tag = language.lower()
        exact = self.text_in(tag)
        if exact:
            return exact
        if _traditional(tag):
            return self.text_in("zh-Hant") or self.zh or self.en
        primary = tag.split("-")[0]
        if primary == "zh":
            return self.zh or self.text_in("zh-Hant") or self.en
        return self.text_in(primary) or self.en


@dataclass(frozen=True)
class Choice:
    code: str
    label: Label


@dataclass(frozen=True)
class EditCheck:
    id: str
    condition: str
    severity: Severity
    message: Label


@dataclass(frozen=True)
class FieldDef:
    id: str
    type: FieldType
    label: Label
    help: Label | None = None
    unit: str | None = None
    required: bool = False
    min: float | str | None = None  # number, or ISO date/time for date-like fields
    max: float | str | None = None
    decimals: int | None = None
    max_length: int | None = None
    choices: tuple[Choice, ...] = ()
    show_if: str | None = None
    calculation: str | None = None  # for type "calculated"
    checks: tuple[EditCheck, ...] = ()
    allow_missing_codes: tuple[str, ...] = ()
    identifier: bool = False  # a direct identifier: encrypted at rest, never exported
    slider_labels: tuple[Label, ...] = ()  # left, (middle), right
    #: data classification for de-identified exports (identifier, quasi_identifier, sensitive,
    #: free_text); None: not classified
    classification: str | None = None


@dataclass(frozen=True)
class FormDef:
    id: str
    title: Label
    fields: tuple[FieldDef, ...]
    respondent: Respondent = "site"
    repeating: bool = False  # e.g. adverse events, concomitant medications
    checks: tuple[EditCheck, ...] = ()  # form-level checks over several fields

    def field(self, field_id: str) -> FieldDef:
        for f in self.fields:
            if f.id == field_id:
                return f
        raise KeyError(field_id)


@dataclass(frozen=True)
class Criterion:
    """An eligibility criterion: an expression over screening values (inclusion must be true,
    exclusion must be false for the participant to be eligible)."""

    id: str
    kind: Literal["inclusion", "exclusion"]
    text: Label
    expression: str


@dataclass(frozen=True)
class VisitDef:
    id: str
    label: Label
    day: int  # planned day offset from the anchor date
    window_before: int = 0
    window_after: int = 0
    forms: tuple[str, ...] = ()
    anchor: Anchor = "randomization"
    # the actual date of this visit re-plans the later visits sharing its anchor
    reanchor: bool = False


@dataclass(frozen=True)
class EproWindow:
    """When a participant questionnaire of a visit is open on the phone: from ``opens`` to
    ``closes`` days around the visit's date (its actual date once recorded, else planned);
    a reminder goes out ``remind_after_hours`` after the link if it is still unanswered.
    With ``every_days`` and ``times`` the window repeats (e.g. weekly, 12 times) from that
    first window; each occurrence is its own entry (``repeat_index``) at the visit."""

    form: str
    visit: str
    opens: int = 0
    closes: int = 0
    remind_after_hours: int | None = None
    every_days: int | None = None
    times: int | None = None


#: the code of a participant's unscheduled visit (one per participant; its forms' entries are
#: told apart by their repeat index): reserved, no schedule visit may take it
UNSCHEDULED_VISIT = "unscheduled"


@dataclass(frozen=True)
class Schedule:
    visits: tuple[VisitDef, ...] = field(default_factory=tuple)
    unscheduled_forms: tuple[str, ...] = ()  # forms allowed at an unscheduled visit
    epro: tuple[EproWindow, ...] = ()  # questionnaires whose links are issued automatically
