"""The form evaluation pipeline (coerce → branch → derive → require → check) and eligibility.

Everything here is pure: the caller passes the submitted values, what was stored before, the
other visits' values and the day; it gets a frozen result back and decides what to store, audit
or show.

Pipeline of ``evaluate_form``:

1. ``submitted`` is the complete new content of the form (a field absent from it is blank).
   Each value is coerced with ``ecrf.fields.coerce_value``; a value that does not fit gives an
   error on its field and is left out. Keys that are not fields of the form are errors too.
   Calculated and descriptive fields must not be submitted (a blank value for them is ignored).
2. Branching and derivation repeat until nothing changes: calculated fields are recomputed in
   dependency order, then each field's ``show_if`` is evaluated over the current values; a
   hidden field loses its value (and cannot hold a derived value), which may hide others.
   A field whose value was removed this way, and which had a value in ``submitted`` or in
   ``previous``, is listed in ``cleared`` so that the caller can audit the removal.
3. On submit only, every visible required field must hold a value or a missing-data code
   (an empty multiple choice does not count).
4. Edit checks of visible fields and of the form run over the final values. A condition that
   evaluates false raises its message; blank (inputs missing) stays silent. Error checks go to
   ``errors``, warning checks to ``warnings``. Form-level errors are keyed by the first field of
   the form the condition references, or ``FORM_KEY`` when it references none.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ecrf.expressions import Expression, ExpressionError, evaluate, parse, truthy
from ecrf.fields import FieldValueError, coerce_value, is_blank
from ecrf.model import (
    FIELD_TYPES,
    MISSING_CODES,
    Criterion,
    EditCheck,
    FieldDef,
    FormDef,
    Label,
    Severity,
)

__all__ = [
    "FORM_KEY",
    "CheckResult",
    "EligibilityResult",
    "FormEvaluation",
    "calculation_order",
    "check_form_definition",
    "evaluate_eligibility",
    "evaluate_form",
]

FORM_KEY = "_form"
_FIELD_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*", re.ASCII)
_CHOICE_TYPES = ("single_choice", "multiple_choice")
_VALUELESS_TYPES = ("calculated", "descriptive")

Visits = Mapping[str, Mapping[str, object]]


@dataclass(frozen=True)
class CheckResult:
    """An edit check that fired: which check, on which field (None: form level), what it says."""

    check_id: str
    field: str | None
    message: Label
    severity: Severity = "warning"


@dataclass(frozen=True)
class FormEvaluation:
    """The outcome of evaluating one form submission or draft."""

    values: dict[str, object]
    errors: dict[str, list[str]]
    warnings: tuple[CheckResult, ...]
    cleared: tuple[str, ...]
    derived: dict[str, object]
    hidden: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()  # fields whose submitted value could not be stored
    failed_checks: tuple[CheckResult, ...] = field(default=())  # error-severity checks that fired

    @property
    def is_valid(self) -> bool:
        """Return True when nothing blocks storing and submitting the form."""
        return not self.errors


@dataclass(frozen=True)
class EligibilityResult:
    """Eligibility of one participant: failed criteria and those that could not be decided."""

    failed: tuple[Criterion, ...]
    undetermined: tuple[Criterion, ...]

    @property
    def is_eligible(self) -> bool:
        """Return True when every criterion was decided and none failed."""
        return not self.failed and not self.undetermined


# --------------------------------------------------------------------------- definition checks


def _parse_or_report(text: str, where: str, problems: list[str]) -> Expression | None:
    try:
        return parse(text)
    except ExpressionError as error:
        problems.append(f"{where}: {error} in {text!r}")
        return None


def _local_references(expression: Expression) -> set[str]:
    return {ref.field for ref in expression.references if ref.visit is None}


def calculation_order(form: FormDef) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """Return the calculated fields in dependency order, and any cycles among them.

    Fields in a cycle are appended in form order after the ordered ones so that evaluation can
    still proceed; ``check_form_definition`` reports the cycles.
    """
    calculated = [f for f in form.fields if f.type == "calculated" and f.calculation]
    ids = {f.id for f in calculated}
    depends: dict[str, set[str]] = {}
    for f in calculated:
        try:
            refs = _local_references(parse(f.calculation or ""))
        except ExpressionError:
            refs = set()
        depends[f.id] = refs & ids
    order: list[str] = []
    done: set[str] = set()
    progress = True
    while progress:
        progress = False
        for f in calculated:
            if f.id not in done and depends[f.id] <= done:
                order.append(f.id)
                done.add(f.id)
                progress = True
    remaining = [f.id for f in calculated if f.id not in done]
    return tuple(order + remaining), tuple(_find_cycles(remaining, depends))


def _find_cycles(nodes: Sequence[str], depends: Mapping[str, set[str]]) -> list[tuple[str, ...]]:
    cycles: list[tuple[str, ...]] = []
    seen: set[frozenset[str]] = set()
    for start in nodes:
        path = [start]
        on_path = {start}
        current = start
        while True:
            candidates = sorted(d for d in depends[current] if d in nodes)
            if not candidates:
                break
            step = candidates[0]
            if step in on_path:
                cycle = (*path[path.index(step) :], step)
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    cycles.append(cycle)
                break
            path.append(step)
            on_path.add(step)
            current = step
    return cycles


def _check_field_definition(
    f: FieldDef, form: FormDef, known: set[str], problems: list[str]
) -> None:
    where = f"field {f.id}"
    if not _FIELD_ID.fullmatch(f.id):
        problems.append(
            f"{where}: id must start with a letter or '_' and hold only letters, digits, '_', '-'"
        )
    if f.type not in FIELD_TYPES:
        problems.append(f"{where}: unknown type {f.type!r} (known: {', '.join(FIELD_TYPES)})")
    if f.type in _CHOICE_TYPES:
        if not f.choices:
            problems.append(f"{where}: {f.type} needs choices")
        codes = [c.code for c in f.choices]
        for code in sorted({c for c in codes if codes.count(c) > 1}):
            problems.append(f"{where}: duplicate choice code {code!r}")
    if f.type == "calculated" and not f.calculation:
        problems.append(f"{where}: calculated field needs a calculation")
    if f.type != "calculated" and f.calculation:
        problems.append(f"{where}: only calculated fields may have a calculation")
    for code in f.allow_missing_codes:
        if code not in MISSING_CODES:
            allowed = ", ".join(MISSING_CODES)
            problems.append(f"{where}: unknown missing code {code!r} (known: {allowed})")
    low, high = f.min, f.max
    if (isinstance(low, int | float) and isinstance(high, int | float) and low > high) or (
        isinstance(low, str) and isinstance(high, str) and low > high
    ):
        problems.append(f"{where}: min is greater than max")
    if f.show_if:
        expression = _parse_or_report(f.show_if, f"{where}: show_if", problems)
        if expression is not None:
            _check_references(expression, f"{where}: show_if", form, known, problems)
            if f.id in _local_references(expression):
                problems.append(f"{where}: show_if refers to the field itself")
    if f.calculation:
        expression = _parse_or_report(f.calculation, f"{where}: calculation", problems)
        if expression is not None:
            _check_references(expression, f"{where}: calculation", form, known, problems)
    for check in f.checks:
        _check_edit_check(check, f"{where}: check {check.id}", form, known, problems)


def _check_edit_check(
    check: EditCheck, where: str, form: FormDef, known: set[str], problems: list[str]
) -> None:
    expression = _parse_or_report(check.condition, where, problems)
    if expression is not None:
        _check_references(expression, where, form, known, problems)


def _check_references(
    expression: Expression, where: str, form: FormDef, known: set[str], problems: list[str]
) -> None:
    form_fields = {f.id: f for f in form.fields}
    for ref in sorted(expression.references, key=lambda r: (r.visit or "", r.field)):
        if ref.field not in known:
            problems.append(f"{where}: unknown field [{ref.field}]")
            continue
        target = form_fields.get(ref.field)
        if ref.option is None or target is None or ref.visit is not None:
            continue
        if target.type != "multiple_choice":
            problems.append(
                f"{where}: [{ref.field}({ref.option})] but {ref.field} is not a "
                "multiple choice field"
            )
        elif ref.option not in {c.code for c in target.choices}:
            problems.append(f"{where}: {ref.field} has no choice {ref.option!r}")


def check_form_definition(form: FormDef, known_fields: Collection[str]) -> list[str]:
    """Return the problems of a form definition (empty when it is sound).

    ``known_fields`` are the field ids of the whole protocol that expressions may reference
    (fields of this form are always known). Reports ids that expressions cannot reference,
    unknown field types, duplicate field or check ids, choice fields
    without choices, unparsable expressions, references to unknown fields or checkbox codes,
    unknown missing codes and cycles among calculated fields.
    """
    problems: list[str] = []
    ids = [f.id for f in form.fields]
    for duplicate in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"form {form.id}: duplicate field id {duplicate!r}")
    check_ids = [c.id for c in form.checks] + [c.id for f in form.fields for c in f.checks]
    for duplicate in sorted({i for i in check_ids if check_ids.count(i) > 1}):
        problems.append(f"form {form.id}: duplicate check id {duplicate!r}")
    known = set(known_fields) | set(ids)
    for f in form.fields:
        _check_field_definition(f, form, known, problems)
    for check in form.checks:
        _check_edit_check(check, f"form {form.id}: check {check.id}", form, known, problems)
    _, cycles = calculation_order(form)
    for cycle in cycles:
        problems.append(f"form {form.id}: calculated fields form a cycle: {' -> '.join(cycle)}")
    return problems


# --------------------------------------------------------------------------- evaluation


@dataclass
class _Run:
    form: FormDef
    visits: Visits
    today: datetime.date
    errors: dict[str, list[str]] = field(default_factory=dict)
    value_errors: dict[str, str] = field(default_factory=dict)

    def add_error(self, key: str, message: str) -> None:
        messages = self.errors.setdefault(key, [])
        if message not in messages:
            messages.append(message)

    def evaluate(self, text: str, values: Mapping[str, object], key: str) -> object:
        try:
            return evaluate(text, values, visits=self.visits, today=self.today)
        except ExpressionError as error:
            self.add_error(key, f"invalid expression: {error}")
            return None


def _coerce_submitted(
    run: _Run, submitted: Mapping[str, object]
) -> tuple[dict[str, object], list[str]]:
    values: dict[str, object] = {}
    invalid: list[str] = []
    fields = {f.id: f for f in run.form.fields}
    for key in submitted:
        if key not in fields:
            run.add_error(str(key), "unknown field")
    for f in run.form.fields:
        raw = submitted.get(f.id)
        if f.type in _VALUELESS_TYPES and (raw is None or raw == ""):
            continue
        try:
            value = coerce_value(f, raw)
        except FieldValueError as error:
            run.value_errors[f.id] = error.message
            invalid.append(f.id)
            continue
        if value is not None:
            values[f.id] = value
    return values, invalid


def _derive(run: _Run, values: dict[str, object], hidden: set[str]) -> dict[str, object]:
    derived: dict[str, object] = {}
    order, _ = calculation_order(run.form)
    for field_id in order:
        values.pop(field_id, None)
        if field_id in hidden:
            continue
        f = run.form.field(field_id)
        result = run.evaluate(f.calculation or "", values, field_id)
        if isinstance(result, bool):
            result = "1" if result else "0"
        if isinstance(result, float) and f.decimals is not None:
            result = evaluate(f"round([x], {int(f.decimals)})", {"x": result})
        if result is not None:
            values[field_id] = result
            derived[field_id] = result
    return derived


def _visibility(run: _Run, values: Mapping[str, object]) -> set[str]:
    hidden: set[str] = set()
    for f in run.form.fields:
        if f.show_if and not truthy(run.evaluate(f.show_if, values, f.id)):
            hidden.add(f.id)
    return hidden


def _check_required(run: _Run, values: Mapping[str, object], hidden: set[str]) -> None:
    for f in run.form.fields:
        is_asked = f.id not in hidden and f.type not in _VALUELESS_TYPES
        is_invalid = f.id in run.value_errors
        if f.required and is_asked and is_blank(values.get(f.id)) and not is_invalid:
            run.add_error(f.id, "required")


def _first_form_field(form: FormDef, expression_text: str) -> str | None:
    try:
        referenced = _local_references(parse(expression_text))
    except ExpressionError:
        return None
    return next((f.id for f in form.fields if f.id in referenced), None)


def _run_checks(
    run: _Run, values: Mapping[str, object], hidden: set[str]
) -> tuple[list[CheckResult], list[CheckResult]]:
    pending: list[tuple[EditCheck, str | None]] = [
        (check, f.id) for f in run.form.fields if f.id not in hidden for check in f.checks
    ]
    pending += [(check, _first_form_field(run.form, check.condition)) for check in run.form.checks]
    warnings: list[CheckResult] = []
    failures: list[CheckResult] = []
    for check, field_id in pending:
        key = field_id or FORM_KEY
        result = run.evaluate(check.condition, values, key)
        if result is None or truthy(result):
            continue
        fired = CheckResult(check.id, field_id, check.message, check.severity)
        if check.severity == "error":
            run.add_error(key, check.message.en)
            failures.append(fired)
        else:
            warnings.append(fired)
    return warnings, failures


def _had_value(field_id: str, *sources: Mapping[str, object]) -> bool:
    return any(not is_blank(source.get(field_id)) for source in sources)


def evaluate_form(
    form: FormDef,
    submitted: Mapping[str, object],
    *,
    previous: Mapping[str, object] | None = None,
    visits: Visits | None = None,
    today: datetime.date,
    submit: bool,
) -> FormEvaluation:
    """Coerce, branch, derive, require (on submit) and check one form's values; never raise."""
    run = _Run(form=form, visits=visits or {}, today=today)
    coerced, invalid = _coerce_submitted(run, submitted)
    hidden: set[str] = set()
    values: dict[str, object] = {}
    derived: dict[str, object] = {}
    # Hiding a field can reveal or hide others; iterate to the fixed point where the hidden set
    # is exactly what show_if gives over the values left visible.
    for _ in range(len(form.fields) + 1):
        values = {k: v for k, v in coerced.items() if k not in hidden}
        derived = _derive(run, values, hidden)
        now_hidden = _visibility(run, values)
        if now_hidden == hidden:
            break
        hidden = now_hidden
    for field_id in hidden:
        derived.pop(field_id, None)
        values.pop(field_id, None)
    # A value that does not fit only matters when its field is asked.
    for field_id, message in run.value_errors.items():
        if field_id not in hidden:
            run.errors[field_id] = [message, *run.errors.get(field_id, [])]
    cleared = tuple(
        f.id
        for f in form.fields
        if f.id in hidden
        and f.type not in _VALUELESS_TYPES
        and _had_value(f.id, coerced, previous or {})
    )
    if submit:
        _check_required(run, values, hidden)
    warnings, failures = _run_checks(run, values, hidden)
    return FormEvaluation(
        values=values,
        errors=run.errors,
        warnings=tuple(warnings),
        cleared=cleared,
        derived=derived,
        hidden=tuple(f.id for f in form.fields if f.id in hidden),
        invalid=tuple(i for i in invalid if i not in hidden),
        failed_checks=tuple(failures),
    )


# --------------------------------------------------------------------------- eligibility


def evaluate_eligibility(
    criteria: Iterable[Criterion],
    values: Mapping[str, object],
    *,
    today: datetime.date,
    visits: Visits | None = None,
) -> EligibilityResult:
    """Decide eligibility: an inclusion must be true, an exclusion false.

    A criterion is undetermined when its result is blank or when any field it references is
    blank (not answered, or only a missing-data code): ``[stroke] = '1'`` is false for a blank
    stroke, yet nobody can tell whether the participant had one.

    Raises ExpressionError when a criterion's expression is not valid (the protocol loader
    rejects such protocols, so this only happens with unchecked definitions).
    """
    failed: list[Criterion] = []
    undetermined: list[Criterion] = []
    for criterion in criteria:
        expression = parse(criterion.expression)
        result = evaluate(expression, values, visits=visits, today=today)
        has_blank_input = any(
            evaluate(ref.text, values, visits=visits, today=today) is None
            for ref in expression.references
        )
        if result is None or has_blank_input:
            undetermined.append(criterion)
        elif truthy(result) != (criterion.kind == "inclusion"):
            failed.append(criterion)
    return EligibilityResult(failed=tuple(failed), undetermined=tuple(undetermined))
