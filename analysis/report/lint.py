"""Report lint: what a statistical reviewer would stop at, checked before a report is issued.

``lint_spec(spec, known_codes=...)`` checks the plain ReportSpec:

- ``empty-cell``: a table or listing cell left blank where a value is expected (blank cells are
  allowed only in a row that is a group heading: a first cell with text and every other cell
  blank, e.g. "Age (years)" above its n / mean rows);
- ``missing-reason``: "NA", "N/A", "nan", "None" or "null" printed where a number or a reason
  should be (say "not estimable", "not reached", "not collected" instead);
- ``unknown-label``: a protocol code printed instead of its label: a snake_case identifier
  anywhere, or a cell that is exactly an arm code or visit id (``known_codes``);
- ``number-gap``: table (or figure, listing) numbers in a section that are not 1, 2, 3 … or
  carry letters (14.2.1.1b);
- ``negative-zero``: a number printed as -0.000;
- ``untranslated`` (Chinese edition): a fixed text left in English: a lower-case Latin word
  (``missing at random``, ``withdrew consent``) outside a protocol label, a data listing's
  cells (data as recorded) and the notation and names a Chinese report keeps in Latin script
  (abbreviations and names are capitalised: MMRM, CI, Wald; ``LATIN_KEPT`` lists the
  lower-case ones: t, p, df, logit …; units and Latin words of the protocol's zh labels pass).

``lint_pdf(pdf, spec)`` checks the rendered PDF: ``wrapped-number`` — a number, code or date of
a table cell (e.g. 0.0491, BJ01-0005, 2026-03-01, 31 (58.5%)) that does not appear whole on one
text line of the rendered pages (it was broken across lines); ``wrapped-word`` — a Latin word of
a table or listing cell or column header ("Satterthwaite") that is whole on fewer rendered lines
than the report prints it (one of its copies was broken inside the word, "Satterthwa/ite"). A
word is a run of Latin letters, so a hyphenated word ("Kenward-Roger") is two and a line break
at its hyphen is not a finding.

``check_report(pdf, spec, known_codes)`` runs both and raises ReportLintError listing every
issue (the analysis service calls it before it stores a report).
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from analysis.report.spec import (
    FigureBlock,
    ListingBlock,
    ReportError,
    ReportSpec,
    Section,
    TableBlock,
    TextBlock,
)

SNAKE_CASE = re.compile(r"(?<![\w/.:-])[a-z][a-z0-9]*(?:_[a-z0-9]+)+(?![\w/.-])")
MISSING_WORDS = re.compile(r"(?<![\w-])(NA|N/A|nan|NaN|None|null)(?![\w-])")
NEGATIVE_ZERO = re.compile(r"-0\.0+(?!\d*[1-9])\b")
#: a lower-case Latin word of two or more letters (English prose), not part of a code
LOWER_WORD = re.compile(r"(?<![A-Za-z0-9_.-])[a-z][a-z'-]*[a-z](?![A-Za-z0-9_])")
CJK = re.compile(r"[\u3400-\u9fff]")
#: lower-case notation and names a Chinese report prints in Latin script
LATIN_KEPT = frozenset({
    "df", "vs", "logit", "log", "log-rank", "log-odds", "log-log", "dtx-trials", "dtx",
    "chisq", "survfit", "emmeans", "geepack", "nlme", "lme", "glm", "coxph", "survdiff",
    "logistic", "conf", "type", "strata",  # "logistic 回归"; R notation: conf.type, strata()
})
#: tokens that must never be split across lines: numbers (with sign, decimals, percent),
#: subject / site codes with digits, ISO dates
ATOMIC = re.compile(
    r"(?<![\w.])(?:[<>]?-?\d+(?:\.\d+)?%?|[A-Z][A-Z0-9]*-\d{2,}[A-Z0-9-]*|\d{4}-\d{2}-\d{2})"
    r"(?![\w.])"
)

#: a Latin word: a run of two or more Latin letters (a hyphen, digit or space ends it)
LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]{2,}")


class ReportLintError(ReportError):
    """A report that fails the lint; ``issues`` lists every finding."""

    def __init__(self, issues: Sequence[LintIssue]) -> None:
        self.issues = tuple(issues)
        lines = "\n".join(f"  {i}" for i in issues[:40])
        more = f"\n  … and {len(issues) - 40} more" if len(issues) > 40 else ""
        super().__init__(f"report lint: {len(issues)} issue(s)\n{lines}{more}")


@dataclass(frozen=True)
class LintIssue:
    """One finding: rule id, where (table number / section) and what."""

    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule} [{self.where}]: {self.message}"


def _blocks(sections: Iterable[Section]) -> Iterator[tuple[Section, object]]:
    for section in sections:
        for block in section.blocks:
            if isinstance(block, Section):
                yield from _blocks([block])
            else:
                yield section, block


def _texts(spec: ReportSpec, data_cells: bool = True) -> Iterator[tuple[str, str]]:
    """Yield (where, text) for every text a reader sees in the body (``data_cells``: with the
    cells of data listings, which print the data as recorded)."""
    yield "title page", spec.trial_title
    for field in (spec.product_name, spec.indication, spec.design, spec.sponsor, spec.phase):
        yield "title page", field
    titled: set[int] = set()
    for section, block in _blocks(spec.sections):
        if id(section) not in titled:  # each section title once
            titled.add(id(section))
            yield section.number, section.title
        if isinstance(block, TextBlock):
            yield section.number, block.text
        elif isinstance(block, TableBlock | ListingBlock | FigureBlock):
            where = block.number
            yield where, block.title
            yield where, block.population
            yield from ((where, note) for note in block.footnotes)
            if isinstance(block, TableBlock | ListingBlock):
                yield from ((where, c) for c in block.columns)
                if data_cells or isinstance(block, TableBlock):
                    yield from ((where, cell) for row in block.rows for cell in row)


def lint_spec(spec: ReportSpec, known_codes: Iterable[str] = (),
              protocol_texts: Iterable[str] = ()) -> list[LintIssue]:
    """Return the issues of a report specification (see the module docstring).

    ``known_codes`` are the protocol's arm codes and visit ids (a cell must not be one);
    ``protocol_texts`` are the protocol's own labels, printed verbatim (a choice labelled
    "None" is a label, not a missing value).
    """
    issues: list[LintIssue] = []
    codes = {c for c in known_codes if c}
    labels = {t.strip() for t in protocol_texts}
    for where, text in _texts(spec):
        if text.strip() in labels:
            continue
        for match in SNAKE_CASE.finditer(text):
            issues.append(LintIssue("unknown-label", where,
                                    f"code {match.group(0)!r} printed instead of a label "
                                    f"in {text[:60]!r}"))
        for match in MISSING_WORDS.finditer(text):
            issues.append(LintIssue("missing-reason", where,
                                    f"{match.group(0)!r} where a value or reason is expected "
                                    f"in {text[:60]!r}"))
        if NEGATIVE_ZERO.search(text):
            issues.append(LintIssue("negative-zero", where, f"-0.000 in {text[:60]!r}"))
    if spec.language == "zh":
        issues += lint_untranslated(spec, labels)
    numbers: dict[tuple[str, str], list[str]] = {}
    for _, block in _blocks(spec.sections):
        if isinstance(block, TableBlock | ListingBlock):
            for r, row in enumerate(block.rows, start=1):
                is_heading = bool(row[0].strip()) and not any(c.strip() for c in row[1:])
                for c, cell in enumerate(row):
                    if not cell.strip() and not is_heading:
                        issues.append(LintIssue(
                            "empty-cell", block.number,
                            f"row {r} column {c + 1} ({block.columns[c] or 'first'!r}) is empty"))
                    if cell.strip() in codes:
                        issues.append(LintIssue("unknown-label", block.number,
                                                f"row {r} prints the code {cell.strip()!r}"))
        if isinstance(block, TableBlock | ListingBlock | FigureBlock):
            kind = type(block).__name__
            parent, _, last = block.number.rpartition(".")
            numbers.setdefault((kind, parent), []).append(last)
    for (kind, parent), lasts in numbers.items():
        label = kind.replace("Block", "").lower()
        if not all(x.isdigit() for x in lasts):
            issues.append(LintIssue("number-gap", parent,
                                    f"{label} numbers {lasts} are not plain integers"))
            continue
        if [int(x) for x in lasts] != list(range(1, len(lasts) + 1)):
            issues.append(LintIssue("number-gap", parent,
                                    f"{label} numbers {parent}.{lasts} are not 1, 2, 3 …"))
    return issues


def lint_untranslated(spec: ReportSpec, protocol_texts: Iterable[str] = ()) -> list[LintIssue]:
    """Return an ``untranslated`` issue per text of a Chinese report with English words left.

    A protocol label passes whole; the Latin words of the protocol's Chinese labels and its
    units (texts without a space, e.g. ``mmol/mol``) pass anywhere.
    """
    labels = {t.strip() for t in protocol_texts}
    kept = set(LATIN_KEPT)
    for label in labels:
        if CJK.search(label) or " " not in label:
            kept.update(w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'-]*", label))
    recorded = sorted((t for t in spec.recorded_texts if t), key=len, reverse=True)
    issues = []
    seen: set[tuple[str, str]] = set()
    texts = [("title page", spec.trial_title), ("title page", spec.report_title),
             ("title page", spec.design), ("title page", spec.data_status),
             ("title page", spec.gcp_statement), *_texts(spec, data_cells=False)]
    for where, text in texts:
        if text.strip() in labels or (where, text) in seen:
            continue
        seen.add((where, text))
        for data in recorded:
            text = text.replace(data, " ")
        english = [w for w in LOWER_WORD.findall(text) if w not in kept]
        if english:
            issues.append(LintIssue("untranslated", where,
                                    f"English {' '.join(english[:6])!r} in {text[:70]!r}"))
    return issues


def _pdf_lines(pdf: bytes) -> list[str]:
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LAParams, LTTextLine

    lines: list[str] = []

    def walk(element: object) -> None:
        if isinstance(element, LTTextLine):
            lines.append(" ".join(element.get_text().split()))
            return
        if hasattr(element, "__iter__"):
            for child in element:
                walk(child)

    # small char margin: table cells of one row stay separate lines, so a number broken
    # inside its cell cannot be glued back together by the neighbouring column
    for page in extract_pages(io.BytesIO(pdf), laparams=LAParams(char_margin=1.0)):
        walk(page)
    return lines


def atomic_tokens(spec: ReportSpec) -> set[str]:
    """Return the numbers, codes and dates printed in table and listing cells."""
    tokens: set[str] = set()
    for _, block in _blocks(spec.sections):
        if isinstance(block, TableBlock | ListingBlock):
            for row in block.rows:
                for cell in row:
                    tokens.update(m.group(0) for m in ATOMIC.finditer(cell))
    return tokens


def cell_words(spec: ReportSpec) -> set[str]:
    """Return the Latin words printed in table and listing cells and column headers."""
    words: set[str] = set()
    for _, block in _blocks(spec.sections):
        if isinstance(block, TableBlock | ListingBlock):
            for text in (*block.columns, *(cell for row in block.rows for cell in row)):
                words.update(LATIN_WORD.findall(text))
    return words


def lint_pdf(pdf: bytes, spec: ReportSpec) -> list[LintIssue]:
    """Return a ``wrapped-number`` issue for each cell token not whole on one rendered line
    and a ``wrapped-word`` issue for each cell word whole on fewer rendered lines than the
    report's texts print it (every text of the body is printed at least once, and nothing but
    a broken word makes a copy go missing)."""
    lines = _pdf_lines(pdf)
    words = {w for line in lines for w in line.split()}
    text = "\n".join(lines)
    issues = []
    for token in sorted(atomic_tokens(spec)):
        if token in words or token in text:
            continue
        issues.append(LintIssue("wrapped-number", "PDF",
                                f"{token!r} is not whole on any rendered line"))
    rendered = Counter(w for line in lines for w in LATIN_WORD.findall(line))
    printed = Counter(w for _, text in _texts(spec) for w in LATIN_WORD.findall(text))
    for word in sorted(cell_words(spec)):
        if rendered[word] < printed[word]:
            issues.append(LintIssue(
                "wrapped-word", "PDF",
                f"{word!r} is printed {printed[word]} times but whole on only {rendered[word]} "
                "rendered lines: a copy was broken inside the word"))
    return issues


def check_report(pdf: bytes, spec: ReportSpec, known_codes: Iterable[str] = (),
                 protocol_texts: Iterable[str] = ()) -> None:
    """Raise ReportLintError when the specification or the rendered PDF has any issue."""
    issues = lint_spec(spec, known_codes, protocol_texts) + lint_pdf(pdf, spec)
    if issues:
        raise ReportLintError(issues)
