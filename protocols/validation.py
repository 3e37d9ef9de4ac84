"""Cross-reference checks of a built Protocol: ids, expressions, schedule, randomization, SAP.

Each check reports through a ``Reporter`` with the document path of the offending value, so the
loader can print ``file:line:col: path: message`` for every problem at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache, reduce
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ecrf.checks import calculation_order
from ecrf.expressions import (
    BinaryNode,
    CallNode,
    Expression,
    ExpressionError,
    Node,
    Reference,
    RefNode,
    UnaryNode,
    evaluate,
    parse,
    truthy,
)
from ecrf.model import UNSCHEDULED_VISIT, FieldDef, FormDef

from .cdisc import CODELISTS, REQUIRED_VARIABLES, SPONSOR_TERMS, mappable_variables
from .countries import alpha3
from .document import Path, Reporter, suggest
from .model import (
    BINARY_MODELS,
    FINDINGS_DOMAINS,
    SURVIVAL_MODELS,
    DomainMap,
    Endpoint,
    Protocol,
    RandomizationSpec,
    StratificationFactor,
    StratumLevel,
)

CHOICE_TYPES = frozenset({"single_choice", "multiple_choice"})
NUMERIC_TYPES = frozenset({"integer", "decimal", "slider", "calculated"})
#: Coverage of a numeric factor is checked on a grid; wider ranges are sampled at this many points.
MAX_GRID_POINTS = 20_000


@dataclass(frozen=True)
class _Context:
    protocol: Protocol
    fields: dict[str, FieldDef]
    visits: frozenset[str]
    reporter: Reporter


def validate_protocol(protocol: Protocol, reporter: Reporter) -> None:
    """Report every cross-reference problem of ``protocol`` (errors and warnings)."""
    fields: dict[str, FieldDef] = {}
    for form in protocol.forms:
        for f in form.fields:
            fields.setdefault(f.id, f)
    ctx = _Context(protocol, fields, frozenset(v.id for v in protocol.schedule.visits), reporter)
    _check_unique_ids(ctx)
    _check_forms(ctx)
    _check_schedule(ctx)
    _check_arms(ctx)
    _check_randomization(ctx)
    _check_eligibility(ctx)
    _check_streams(ctx)
    _check_intercurrent_events(ctx)
    _check_endpoints(ctx)
    _check_multiplicity(ctx)
    _check_consents(ctx)
    _check_sites(ctx)
    _check_epro_windows(ctx)
    _check_safety(ctx)
    _check_cdisc(ctx)
    _check_amendment(ctx)
    _check_languages(ctx)
    _warn_about_design(ctx)


def is_iana_timezone(name: str) -> bool:
    """Return True when ``name`` is a time zone of the IANA database (e.g. Asia/Shanghai)."""
    if not name or name != name.strip() or name.startswith("/") or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _check_safety(ctx: _Context) -> None:
    safety = ctx.protocol.safety
    form_ids = {f.id for f in ctx.protocol.forms}
    if (safety.form is None) != (safety.serious_if is None):
        ctx.reporter.error(("safety", "form" if safety.form is None else "serious_if"),
                           "safety.form and safety.serious_if go together")
    if safety.form is not None and safety.form not in form_ids:
        ctx.reporter.error(("safety", "form"), f"unknown form '{safety.form}'")
    check_expression(ctx, safety.serious_if, ("safety", "serious_if"))
    _duplicates(ctx.reporter, "alert rule id", (
        (a.id, ("safety", "alerts", i, "id")) for i, a in enumerate(safety.alerts)
    ))
    for i, rule in enumerate(safety.alerts):
        if rule.form not in form_ids:
            ctx.reporter.error(("safety", "alerts", i, "form"), f"unknown form '{rule.form}'")
        check_expression(ctx, rule.when, ("safety", "alerts", i, "when"))


def _check_cdisc(ctx: _Context) -> None:
    """The CDISC mapping: sources exist, variables belong to their domain, every collected
    choice maps to a term of the named codelist, findings tests are well formed."""
    spec = ctx.protocol.cdisc
    if spec is None:
        return
    forms = {f.id: f for f in ctx.protocol.forms}
    streams = {s.id for s in ctx.protocol.device_streams}
    seen_domains: dict[str, int] = {}
    tests_seen: dict[tuple[str, str], str] = {}
    for i, mapping in enumerate(spec.mappings):
        base: Path = ("cdisc", "mappings", i)
        domain = mapping.domain
        # one form per domain the SDTM export builds from one mapping (AE and CM: their
        # dataset is one form's records; a second form's events would be left out)
        if domain in ("DM", "DS", "EX", "AE", "CM") and domain in seen_domains:
            ctx.reporter.error((*base, "domain"), f"{domain} is mapped twice (first at mapping "
                               f"{seen_domains[domain] + 1})")
        seen_domains.setdefault(domain, i)
        form = None
        if domain in ("EX", "XD"):
            if mapping.stream is None:
                ctx.reporter.error((*base, "domain"), f"{domain} is mapped from a device stream: "
                                   "give 'stream'")
            elif mapping.stream not in streams:
                ctx.reporter.error((*base, "stream"), f"unknown device stream '{mapping.stream}'")
            if mapping.form is not None:
                ctx.reporter.error((*base, "form"), f"{domain} comes from a stream, not a form")
        else:
            if mapping.stream is not None:
                ctx.reporter.error((*base, "stream"), f"{domain} comes from a form, not a stream")
            if mapping.form is None:
                ctx.reporter.error((*base, "domain"), f"{domain} needs 'form'")
            elif mapping.form not in forms:
                ctx.reporter.error((*base, "form"), f"unknown form '{mapping.form}'"
                                   f"{suggest(mapping.form, set(forms))}")
            else:
                form = forms[mapping.form]
        if mapping.date_field is not None:
            _check_cdisc_field(ctx, form, mapping.date_field, (*base, "date_field"), ("date",))
        _check_cdisc_variables(ctx, mapping, form, base)
        _check_cdisc_tests(ctx, mapping, form, streams, base, tests_seen)


def _check_cdisc_field(ctx: _Context, form: FormDef | None, field_id: str, path: Path,
                       types: tuple[str, ...]) -> FieldDef | None:
    if form is None:
        return None
    found = next((f for f in form.fields if f.id == field_id), None)
    if found is None:
        ctx.reporter.error(path, f"form '{form.id}' has no field '{field_id}'"
                           f"{suggest(field_id, {f.id for f in form.fields})}")
        return None
    if found.identifier:
        ctx.reporter.error(path, f"field '{field_id}' is a direct identifier and is never exported")
        return None
    if types and found.type not in types:
        ctx.reporter.error(path, f"field '{field_id}' is {found.type}, expected "
                           f"{' or '.join(types)}")
        return None
    return found


def _check_cdisc_variables(ctx: _Context, mapping: DomainMap, form: FormDef | None,
                           base: Path) -> None:
    allowed = mappable_variables(mapping.domain)
    seen: set[str] = set()
    for k, var in enumerate(mapping.variables):
        path: Path = (*base, "variables", k)
        meta = allowed.get(var.variable)
        if meta is None:
            ctx.reporter.error((*path, "variable"), f"{var.variable} is not a mappable "
                               f"{mapping.domain} variable" + (
                                   f" (one of {', '.join(sorted(allowed))})" if allowed
                                   else f": {mapping.domain} is mapped through 'tests'"))
            continue
        if var.variable in seen:
            ctx.reporter.error((*path, "variable"), f"{var.variable} is mapped twice")
        seen.add(var.variable)
        if (var.field is None) == (var.value is None):
            ctx.reporter.error((*path, "variable"), "give exactly one of 'field' and 'value'")
            continue
        codelist = CODELISTS.get(var.codelist) if var.codelist else None
        if var.codelist and codelist is None:
            ctx.reporter.error((*path, "codelist"), f"unknown codelist {var.codelist} (known: "
                               f"{', '.join(sorted(CODELISTS))})")
        if meta.kind == "coded" and var.variable not in SPONSOR_TERMS and var.codelist is None:
            ctx.reporter.error((*path, "variable"), f"{var.variable} is controlled terminology: "
                               "name its 'codelist'")
        if var.value is not None:
            if var.terms:
                ctx.reporter.error((*path, "terms"), "terms map collected codes: a constant "
                                   "'value' has none")
            if codelist is not None and not codelist.extensible and \
                    var.value not in codelist.values:
                ctx.reporter.error((*path, "value"), f"'{var.value}' is not a {codelist.code} "
                                   f"({codelist.name}) term")
            continue
        types = {"date": ("date",), "number": ("integer", "decimal", "calculated", "slider"),
                 "coded": ("single_choice", "yesno"), "text": ("text", "single_choice")}
        source = _check_cdisc_field(ctx, form, var.field or "", (*path, "field"),
                                    types[meta.kind])
        if source is None:
            continue
        codes = ["1", "0"] if source.type == "yesno" else [c.code for c in source.choices]
        if meta.kind == "coded" or (source.type == "single_choice" and var.terms):
            mapped = {t.code for t in var.terms}
            missing = [c for c in codes if c not in mapped]
            if missing:
                ctx.reporter.error((*path, "terms"), f"collected code(s) {', '.join(missing)} of "
                                   f"field '{source.id}' have no term")
            for t, term in enumerate(var.terms):
                if term.code not in codes:
                    ctx.reporter.error((*path, "terms", t, "code"), f"'{term.code}' is not a "
                                       f"code of field '{source.id}' ({', '.join(codes)})")
                if codelist is not None and not codelist.extensible and \
                        term.value not in codelist.values:
                    ctx.reporter.error((*path, "terms", t, "value"), f"'{term.value}' is not a "
                                       f"{codelist.code} ({codelist.name}) term")
        elif var.terms:
            ctx.reporter.error((*path, "terms"), f"field '{source.id}' is {source.type}: "
                               "no codes to map")
    if form is not None or mapping.domain == "EX":
        for name in REQUIRED_VARIABLES.get(mapping.domain, ()):
            if name not in seen:
                ctx.reporter.error((*base, "variables"), f"{mapping.domain} mapping needs {name}")


def _check_cdisc_tests(ctx: _Context, mapping: DomainMap, form: FormDef | None,
                       streams: set[str], base: Path,
                       tests_seen: dict[tuple[str, str], str]) -> None:
    findings = mapping.domain in FINDINGS_DOMAINS
    if not findings:
        if mapping.tests:
            ctx.reporter.error((*base, "tests"), f"{mapping.domain} is not a findings domain")
        for key in ("category", "method"):
            if getattr(mapping, key) is not None:
                ctx.reporter.error((*base, key), f"--{key.upper()[:4]} belongs to findings "
                                   "domains")
        return
    if not mapping.tests:
        ctx.reporter.error((*base, "domain"), f"a {mapping.domain} mapping needs 'tests'")
    if mapping.domain == "QS" and mapping.category is None:
        ctx.reporter.error((*base, "domain"), "QS needs 'category' (QSCAT is required)")
    for k, test in enumerate(mapping.tests):
        path: Path = (*base, "tests", k)
        if mapping.domain == "XD":
            if test.field != mapping.stream:
                ctx.reporter.error((*path, "field"), f"an XD test reads its stream "
                                   f"'{mapping.stream}'")
        else:
            _check_cdisc_field(ctx, form, test.field, (*path, "field"),
                               ("integer", "decimal", "calculated", "slider", "single_choice",
                                "yesno"))
        if len(test.test) > 40:
            ctx.reporter.error((*path, "test"), f"--TEST is {len(test.test)} characters (max 40)")
        if test.laterality is not None and mapping.domain != "OE":
            ctx.reporter.error((*path, "laterality"), "laterality belongs to OE")
        test_key = (mapping.domain, test.testcd)
        if test_key in tests_seen and tests_seen[test_key] != test.test:
            ctx.reporter.error((*path, "test"), f"{test.testcd} is already "
                               f"'{tests_seen[test_key]}' (--TESTCD and --TEST go 1:1)")
        tests_seen.setdefault(test_key, test.test)


def _check_epro_windows(ctx: _Context) -> None:
    protocol = ctx.protocol
    for i, window in enumerate(protocol.schedule.epro):
        base: Path = ("schedule", "epro", i)
        try:
            form = protocol.form(window.form)
        except KeyError:
            ctx.reporter.error((*base, "form"), f"unknown form '{window.form}'")
            continue
        if form.respondent != "participant":
            ctx.reporter.error((*base, "form"), f"form '{window.form}' is not answered by the "
                               "participant (respondent: participant)")
        if window.visit not in ctx.visits:
            ctx.reporter.error((*base, "visit"), f"unknown visit '{window.visit}'")
        elif window.form not in protocol.visit(window.visit).forms:
            ctx.reporter.error((*base, "visit"),
                               f"form '{window.form}' is not scheduled at visit '{window.visit}'")
        if window.closes < window.opens:
            ctx.reporter.error((*base, "closes"),
                               f"closes ({window.closes}) before it opens ({window.opens})")
        if (window.every_days is None) != (window.times is None):
            ctx.reporter.error((*base, "every_days" if window.every_days is None else "times"),
                               "every_days and times go together")
        elif window.every_days is not None and window.every_days <= window.closes - window.opens:
            ctx.reporter.error((*base, "every_days"),
                               f"every {window.every_days} days overlaps the window "
                               f"({window.closes - window.opens + 1} days): one open at a time")


def _check_sites(ctx: _Context) -> None:
    for i, site in enumerate(ctx.protocol.sites.initial_sites):
        if site.timezone is not None and not is_iana_timezone(site.timezone):
            ctx.reporter.error(
                ("sites", "initial", i, "timezone"),
                f"'{site.timezone}' is not an IANA time zone (e.g. Asia/Shanghai, Europe/Paris)",
            )
        if site.country is not None and alpha3(site.country) is None:
            ctx.reporter.error(
                ("sites", "initial", i, "country"),
                f"'{site.country}' is not an ISO 3166-1 alpha-2 country code (e.g. CN, HK, US)",
            )


def _duplicates(reporter: Reporter, what: str, items: Iterable[tuple[str, Path]]) -> None:
    seen: dict[str, Path] = {}
    for ident, path in items:
        if not ident:
            continue
        if ident in seen:
            line = reporter.sources.locate(seen[ident])[0]
            reporter.error(path, f"duplicate {what} '{ident}' (first defined at line {line})")
        else:
            seen[ident] = path


def _check_unique_ids(ctx: _Context) -> None:
    p, r = ctx.protocol, ctx.reporter
    _duplicates(r, "arm code", ((a.code, ("arms", i, "code")) for i, a in enumerate(p.arms)))
    _duplicates(r, "form id", ((f.id, ("forms", i, "id")) for i, f in enumerate(p.forms)))
    _duplicates(r, "field id", (
        (f.id, ("forms", i, "fields", j, "id"))
        for i, form in enumerate(p.forms) for j, f in enumerate(form.fields)
    ))
    _duplicates(r, "visit id", (
        (v.id, ("schedule", "visits", i, "id")) for i, v in enumerate(p.schedule.visits)
    ))
    _duplicates(r, "endpoint id", (
        (e.id, ("endpoints", i, "id")) for i, e in enumerate(p.endpoints)
    ))
    _duplicates(r, "criterion id", (
        (c.id, ("eligibility", i, "id")) for i, c in enumerate(p.eligibility)
    ))
    _duplicates(r, "factor id", (
        (f.id, ("randomization", "factors", i, "id"))
        for i, f in enumerate(p.randomization.factors)
    ))
    _duplicates(r, "stream id", (
        (s.id, ("device_streams", i, "id")) for i, s in enumerate(p.device_streams)
    ))
    _duplicates(r, "site code", (
        (s.code, ("sites", "initial", i, "code")) for i, s in enumerate(p.sites.initial_sites)
    ))
    for i, form in enumerate(p.forms):
        _duplicates(r, "check id", (
            (c.id, ("forms", i, "checks", j, "id")) for j, c in enumerate(form.checks)
        ))
        for j, f in enumerate(form.fields):
            base: Path = ("forms", i, "fields", j)
            _duplicates(r, "choice code", (
                (c.code, (*base, "choices", k, "code")) for k, c in enumerate(f.choices)
            ))
            _duplicates(r, "check id", (
                (c.id, (*base, "checks", k, "id")) for k, c in enumerate(f.checks)
            ))
    for i, factor in enumerate(p.randomization.factors):
        _duplicates(r, "level code", (
            (lv.code, ("randomization", "factors", i, "levels", k, "code"))
            for k, lv in enumerate(factor.levels)
        ))


def check_expression(ctx: _Context, text: str | None, path: Path) -> None:
    """Parse ``text`` and report syntax errors and references to unknown fields/visits/codes."""
    if not text:
        return
    reporter = ctx.reporter
    offset = _expression_offset(reporter, path)
    try:
        expression = parse(text)
    except ExpressionError as exc:
        reporter.error(path, f"expression syntax error at column {exc.position + 1}: "
                       f"{exc.message}", column_offset=_column(offset, exc.position))
        return
    for ref, position in _references_with_positions(expression.ast):
        if ref.field not in ctx.fields:
            reporter.error(
                path,
                f"undefined field '{ref.field}' in expression (column {position + 1})"
                f"{suggest(ref.field, set(ctx.fields))}",
                column_offset=_column(offset, position),
            )
            continue
        if ref.visit is not None and ref.visit not in ctx.visits:
            reporter.error(path, f"undefined visit '{ref.visit}' in expression"
                           f"{suggest(ref.visit, set(ctx.visits))}",
                           column_offset=_column(offset, position))
        elif ref.visit is not None and not _is_collected_at(ctx, ref.field, ref.visit):
            reporter.warning(path, f"field '{ref.field}' is not collected at visit '{ref.visit}'")
        field = ctx.fields[ref.field]
        if ref.option is None:
            continue
        if field.type != "multiple_choice":
            reporter.error(path, f"[{ref.field}({ref.option})] needs a multiple_choice field, "
                           f"but '{ref.field}' is {field.type}",
                           column_offset=_column(offset, position))
            continue
        codes = {c.code for c in field.choices}
        if ref.option not in codes:
            reporter.error(path, f"'{ref.option}' is not a choice code of field "
                           f"'{ref.field}' (codes: {', '.join(sorted(codes))})",
                           column_offset=_column(offset, position))


def _is_collected_at(ctx: _Context, field_id: str, visit_id: str) -> bool:
    visit = ctx.protocol.visit(visit_id)
    unscheduled = ctx.protocol.schedule.unscheduled_forms
    return any(
        form.id in visit.forms or form.repeating or form.id in unscheduled
        for form in ctx.protocol.forms
        if any(f.id == field_id for f in form.fields)
    )


def _references_with_positions(node: Node) -> list[tuple[Reference, int]]:
    """Return every field reference of the tree with its 0-based offset, in text order."""
    found: list[tuple[Reference, int]] = []
    stack: list[Node] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, RefNode):
            found.append((current.reference, current.position))
        elif isinstance(current, UnaryNode):
            stack.append(current.operand)
        elif isinstance(current, BinaryNode):
            stack.extend((current.left, current.right))
        elif isinstance(current, CallNode):
            stack.extend(current.args)
    return sorted(found, key=lambda item: item[1])


def _expression_offset(reporter: Reporter, path: Path) -> int | None:
    """Column shift from the YAML value's start to the expression's first character, if exact."""
    style = reporter.sources.scalar_styles.get(path, "")
    if style is None:
        return 0
    if style in ("'", '"'):
        return 1
    return None  # block scalars: point at the value start


def _column(offset: int | None, position: int) -> int | None:
    return None if offset is None else offset + position


def _check_forms(ctx: _Context) -> None:
    for i, form in enumerate(ctx.protocol.forms):
        positions = {f.id: j for j, f in enumerate(form.fields)}
        for j, f in enumerate(form.fields):
            base: Path = ("forms", i, "fields", j)
            _check_field(ctx, f, base)
        for cycle in calculation_order(form)[1]:
            ctx.reporter.error(("forms", i, "fields", positions[cycle[0]], "calculation"),
                               f"calculated fields form a cycle: {' -> '.join(cycle)}")
        for k, check in enumerate(form.checks):
            check_expression(ctx, check.condition, ("forms", i, "checks", k, "condition"))


def _check_field(ctx: _Context, f: FieldDef, base: Path) -> None:
    r = ctx.reporter
    if f.type in CHOICE_TYPES and not f.choices:
        r.error((*base, "type"), f"field '{f.id}' of type {f.type} has no choices")
    if f.choices and f.type not in CHOICE_TYPES:
        r.error((*base, "choices"), f"choices are only allowed on single_choice/multiple_choice "
                f"fields, not on {f.type}")
    if f.type == "calculated" and not f.calculation:
        r.error((*base, "type"), f"calculated field '{f.id}' has no calculation")
    if f.calculation and f.type != "calculated":
        r.error((*base, "calculation"), f"calculation is only allowed on calculated fields, "
                f"not on {f.type}")
    if f.slider_labels and f.type != "slider":
        r.error((*base, "slider_labels"), "slider_labels are only allowed on slider fields")
    if f.classification == "identifier" and not f.identifier:
        r.error((*base, "identifier"), f"field '{f.id}' is classified identifier but says "
                "identifier: false")
    if f.identifier and f.classification not in (None, "identifier"):
        r.error((*base, "classification"), f"field '{f.id}' is a direct identifier "
                f"(identifier: true) and cannot be classified {f.classification}")
    if f.classification == "free_text" and f.type != "text":
        r.error((*base, "classification"), f"free_text is only allowed on text fields, "
                f"not on {f.type}")
    if f.type == "slider" and (f.min is None or f.max is None):
        r.error((*base, "type"), f"slider field '{f.id}' needs min and max")
    if isinstance(f.min, (int, float)) and isinstance(f.max, (int, float)) and f.min > f.max:
        r.error((*base, "min"), f"min {f.min:g} is greater than max {f.max:g}")
    if isinstance(f.min, str) and isinstance(f.max, str) and f.min > f.max:
        r.error((*base, "min"), f"min {f.min} is after max {f.max}")
    if f.decimals is not None and f.type not in ("decimal", "calculated", "slider"):
        r.error((*base, "decimals"), f"decimals only apply to decimal fields, not {f.type}")
    if f.max_length is not None and f.type != "text":
        r.error((*base, "max_length"), f"max_length only applies to text fields, not {f.type}")
    check_expression(ctx, f.show_if, (*base, "show_if"))
    if f.show_if and _refers_to_itself(f.show_if, f.id):
        r.error((*base, "show_if"), f"show_if of '{f.id}' refers to the field itself")
    check_expression(ctx, f.calculation, (*base, "calculation"))
    for k, check in enumerate(f.checks):
        check_expression(ctx, check.condition, (*base, "checks", k, "condition"))


def _refers_to_itself(text: str, field_id: str) -> bool:
    try:
        references = parse(text).references
    except ExpressionError:
        return False
    return any(ref.field == field_id and ref.visit is None for ref in references)


def _check_schedule(ctx: _Context) -> None:
    p, r = ctx.protocol, ctx.reporter
    form_ids = {f.id for f in p.forms}
    scheduled: set[str] = set()
    for i, visit in enumerate(p.schedule.visits):
        if visit.id == UNSCHEDULED_VISIT:
            r.error(("schedule", "visits", i, "id"),
                    f"'{UNSCHEDULED_VISIT}' is the code of every participant's unscheduled visit "
                    "(schedule.unscheduled_forms, the logs); give this visit another id")
        if i and p.schedule.visits[i - 1].anchor == visit.anchor:
            before = p.schedule.visits[i - 1]
            if before.day + before.window_after >= visit.day - visit.window_before:
                r.warning(("schedule", "visits", i, "window_before"),
                          f"the windows of visits '{before.id}' and '{visit.id}' overlap")
        for k, form_id in enumerate(visit.forms):
            scheduled.add(form_id)
            if form_id and form_id not in form_ids:
                r.error(("schedule", "visits", i, "forms", k),
                        f"visit '{visit.id}' references unknown form '{form_id}'"
                        f"{suggest(form_id, form_ids)}")
        _duplicates(r, f"form in visit '{visit.id}'", (
            (form_id, ("schedule", "visits", i, "forms", k))
            for k, form_id in enumerate(visit.forms)
        ))
    days = [v.day for v in p.schedule.visits if v.anchor == "randomization"]
    if days != sorted(days):
        r.error(("schedule", "visits"), "visits anchored at randomization must be in day order")
    for k, form_id in enumerate(p.schedule.unscheduled_forms):
        if form_id not in form_ids:
            r.error(("schedule", "unscheduled_forms", k),
                    f"unknown form '{form_id}'{suggest(form_id, form_ids)}")
    unscheduled = set(p.schedule.unscheduled_forms)
    for i, form in enumerate(p.forms):
        if form.id and form.id not in scheduled and form.id not in unscheduled \
                and not form.repeating:
            r.error(("forms", i, "id"),
                    f"form '{form.id}' is not scheduled at any visit (schedule it, list it in "
                    "schedule.unscheduled_forms, or declare it repeating: true for a log form)")


DOUBLE_BLIND_REQUIRED = ("participant", "investigator", "coordinator", "outcome_assessor")


def _check_arms(ctx: _Context) -> None:
    p, r = ctx.protocol, ctx.reporter
    if sum(1 for a in p.arms if a.is_control) > 1:
        r.error(("arms",), "at most one arm may be the control (is_control: true)")
    if p.blinding.level == "open" and p.blinding.blinded_roles:
        r.error(("blinding", "blinded_roles"), "an open-label trial has no blinded roles")
    if p.blinding.level != "open" and not p.blinding.blinded_roles:
        r.error(("blinding", "level"),
                f"a {p.blinding.level}-blind trial must list its blinded_roles")
    for i, role in enumerate(p.blinding.comparative_review):
        if role not in p.blinding.blinded_roles:
            r.error(("blinding", "comparative_review", i),
                    f"{role} is not blinded in this trial: it sees the arms, dummy labels "
                    "would hide nothing from it")
    # blinded_roles decides who sees arms (services/access.py): a level it contradicts is
    # refused rather than silently widened or narrowed.
    listed = set(p.blinding.blinded_roles)
    if p.blinding.level == "double" and listed:
        missing = [x for x in DOUBLE_BLIND_REQUIRED if x not in listed]
        if missing:
            r.error(("blinding", "blinded_roles"),
                    "a double-blind trial blinds the participant and everyone at the site: add "
                    + ", ".join(missing))
    if p.blinding.level == "single" and listed and not listed & {"participant",
                                                                 "outcome_assessor"}:
        r.error(("blinding", "blinded_roles"),
                "a single-blind trial blinds the participant or the outcome assessor: list one")
    assessor_forms = [i for i, f in enumerate(p.forms) if f.respondent == "outcome_assessor"]
    if assessor_forms and "outcome_assessor" not in listed:
        r.warning(("forms", assessor_forms[0], "respondent"),
                  "outcome-assessor forms in a trial that does not blind the outcome assessor")
    if p.blinding.level == "open" and p.blinding.unblinding_notify is not None:
        r.error(("blinding", "unblinding_notify"),
                "an open-label trial has no emergency unblinding to notify")
    notify = p.blinding.unblinding_notify or ()
    _duplicates(r, "role", (
        (role, ("blinding", "unblinding_notify", i)) for i, role in enumerate(notify)
    ))
    if p.blinding.unblinding_notify is not None and not notify:
        r.error(("blinding", "unblinding_notify"),
                "name at least one role: an emergency unblinding must be notified (ICH E9 "
                "§2.3.1; randomization-methods.md §1.7)")
    if p.blinding.level == "double" and p.blinding.activation_code_prefix is None:
        r.warning(("blinding",), "double-blind DTx trials usually dispense activation codes: "
                  "set activation_code_prefix")


def _ratio_sum(protocol: Protocol) -> int:
    return sum(protocol.reduced_ratio)


def _check_randomization(ctx: _Context) -> None:
    p, r = ctx.protocol, ctx.reporter
    spec = p.randomization
    base: Path = ("randomization",)
    method = spec.method
    ratio_sum = _ratio_sum(p)
    if method == "permuted_block" and not spec.block_sizes:
        r.error((*base, "method"), "permuted_block needs block_sizes")
    if spec.block_sizes and method != "permuted_block":
        r.error((*base, "block_sizes"), f"block_sizes are not used by method {method}")
    if method != "minimization":
        for name, is_set in (("burn_in", spec.burn_in != 0),
                             ("overall_weight", spec.overall_weight != 0),
                             ("site_weight", spec.site_weight != 1.0)):
            if is_set:
                r.error((*base, name), f"{name} is only used by minimization, not {method}")
    for k, size in enumerate(spec.block_sizes):
        if ratio_sum and size % ratio_sum:
            r.error((*base, "block_sizes", k),
                    f"block size {size} is not a multiple of ratio sum {ratio_sum}")
    _duplicates(r, "block size", (
        (str(size), (*base, "block_sizes", k)) for k, size in enumerate(spec.block_sizes)
    ))
    _check_method_parameters(ctx, spec, base)
    for i, factor in enumerate(spec.factors):
        _check_factor(ctx, factor, (*base, "factors", i))


def _check_method_parameters(ctx: _Context, spec: RandomizationSpec, base: Path) -> None:
    p, r = ctx.protocol, ctx.reporter
    method = spec.method
    two_arm = len(p.arms) == 2
    equal = len(set(p.reduced_ratio)) <= 1
    own = {
        "p": method == "minimization",
        "efron_p": method == "efron",
        "bsd_b": method == "big_stick",
        "bud_lambda": method == "block_urn",
        "mp_b": method == "maximal",
        "mp_block_length": method == "maximal",
    }
    values = {"p": spec.p, "efron_p": spec.efron_p, "bsd_b": spec.bsd_b,
              "bud_lambda": spec.bud_lambda, "mp_b": spec.mp_b,
              "mp_block_length": spec.mp_block_length}
    for name, is_own in own.items():
        if is_own and values[name] is None:
            r.error((*base, "method"), f"method {method} needs {name}")
        if not is_own and values[name] is not None:
            r.error((*base, name), f"{name} is not used by method {method}")
    if method == "minimization":
        if not spec.factors and not spec.stratify_by_site:
            r.error((*base, "method"), "minimization needs at least one factor (or "
                    "stratify_by_site: true)")
        weights = [f.weight for f in spec.factors] + (
            [spec.site_weight] if spec.stratify_by_site else [])
        if weights and not any(w > 0 for w in weights):
            r.error((*base, "factors"), "at least one minimization weight must be positive")
        if spec.p is not None and spec.p >= 1:
            r.error((*base, "p"), "p = 1 makes minimization deterministic; ICH E9 requires a "
                    "random element (use e.g. 0.8)")
        elif spec.p is not None and spec.p <= 0.5 and two_arm:
            r.error((*base, "p"), f"p must exceed 0.5 to favour the preferred arm, got {spec.p:g}")
    else:
        if spec.imbalance != "range":
            r.error((*base, "imbalance"), f"imbalance is not used by method {method}")
        for i, factor in enumerate(spec.factors):
            if factor.weight != 1.0:
                r.error((*base, "factors", i, "weight"),
                        f"weights are only used by minimization, not {method}")
    if method in ("efron", "big_stick", "maximal") and not (two_arm and equal):
        r.error((*base, "method"), f"{method} is defined for two arms with a 1:1 ratio")
    if spec.mp_block_length is not None and spec.mp_block_length % 2:
        r.error((*base, "mp_block_length"),
                f"mp_block_length must be even (a block ends balanced), got {spec.mp_block_length}")
    if method == "efron" and spec.efron_p is not None and spec.efron_p <= 0.5:
        r.error((*base, "efron_p"), "efron_p must be in (0.5, 1]")
    if method == "list" and spec.factors:
        r.warning((*base, "factors"), "an uploaded list must hold one sequence per stratum")


def _check_factor(ctx: _Context, factor: StratificationFactor, base: Path) -> None:
    r = ctx.reporter
    source = ctx.fields.get(factor.field)
    if factor.field and source is None:
        r.error((*base, "field"), f"unknown field '{factor.field}'"
                f"{suggest(factor.field, set(ctx.fields))}")
    elif source is not None and factor.field not in _pre_randomization_fields(ctx.protocol):
        r.error((*base, "field"), f"field '{factor.field}' is not collected at any visit "
                "before randomization, so the stratum cannot be derived")
    if factor.visit is not None:
        _check_visit_ref(ctx, factor.visit, (*base, "visit"))
        if factor.visit in ctx.visits:
            visit = ctx.protocol.visit(factor.visit)
            if visit.anchor == "randomization" and visit.day > 0:
                r.error((*base, "visit"), f"visit '{factor.visit}' is after randomization: a "
                        "stratification factor needs a value known when randomizing")
            elif source is not None and not _is_collected_at(ctx, factor.field, factor.visit):
                r.error((*base, "visit"), f"field '{factor.field}' is not collected at visit "
                        f"'{factor.visit}'")
    _check_levels(ctx, factor.levels, base, require_rules=True)
    if source is not None:
        _check_coverage(ctx, factor, source, base)


def _check_levels(ctx: _Context, levels: Sequence[StratumLevel], base: Path, *,
                  require_rules: bool) -> None:
    r = ctx.reporter
    for k, level in enumerate(levels):
        path: Path = (*base, "levels", k)
        if level.is_otherwise and level.when:
            r.error((*path, "when"), "an otherwise level takes no rule")
        if level.is_otherwise and k != len(levels) - 1:
            r.error((*path, "otherwise"), "the otherwise level must be the last level")
        if require_rules and not level.is_otherwise and not level.when:
            r.error(path, f"level '{level.code}' needs a rule (when: ...) or otherwise: true")
        check_expression(ctx, level.when, (*path, "when"))


def _candidate_values(source: FieldDef) -> tuple[list[object], str] | None:
    """Return the value space of ``source`` to test coverage on, with a noun; None if unbounded."""
    if source.type in ("single_choice", "multiple_choice") and source.choices:
        return [c.code for c in source.choices], "codes"
    if source.type == "yesno":
        return ["1", "0"], "codes"
    if source.type in NUMERIC_TYPES and isinstance(source.min, (int, float)) \
            and isinstance(source.max, (int, float)):
        low, high = float(source.min), float(source.max)
        if source.type == "integer" or (source.decimals == 0):
            step = 1.0
        else:
            step = 10.0 ** -(source.decimals if source.decimals is not None else 2)
        n_points = round((high - low) / step) + 1
        if n_points > MAX_GRID_POINTS:
            step = (high - low) / (MAX_GRID_POINTS - 1)
            n_points = MAX_GRID_POINTS
        values: list[object] = [
            _tidy(low + i * step, step) for i in range(n_points)
        ]
        return values, "values"
    return None


def _tidy(value: float, step: float) -> float | int:
    if step >= 1 and value.is_integer():
        return int(value)
    digits = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return round(value, digits + 2)


@lru_cache(maxsize=512)
def _parsed(text: str) -> Expression:
    return parse(text)


def _level_matches(level: StratumLevel, field_id: str, value: object) -> bool:
    if level.is_otherwise:
        return True
    if not level.when:
        return False
    try:
        return truthy(evaluate(_parsed(level.when), {field_id: value}))
    except ExpressionError:
        return False


def _check_coverage(ctx: _Context, factor: StratificationFactor, source: FieldDef,
                    base: Path) -> None:
    r = ctx.reporter
    if any(level.is_otherwise for level in factor.levels):
        return
    space = _candidate_values(source)
    if space is None:
        r.error((*base, "levels"),
                f"field '{source.id}' ({source.type}) has no bounded value space: add a final "
                "level with otherwise: true (or give the field min and max)")
        return
    values, noun = space
    if source.type == "multiple_choice":
        r.error((*base, "field"), "a factor cannot be derived from a multiple_choice field")
        return
    uncovered = [i for i, v in enumerate(values)
                 if not any(_level_matches(lv, source.id, v) for lv in factor.levels)]
    if uncovered:
        shown = _summarize(uncovered, values) if noun == "values" else ", ".join(
            str(values[i]) for i in uncovered)
        r.error((*base, "levels"),
                f"levels of factor '{factor.id}' do not cover {noun} of '{source.id}': {shown} "
                "(add a level or a final otherwise: true)")


def _summarize(uncovered: list[int], values: list[object]) -> str:
    """Render uncovered grid points (indices into ``values``) as ranges, e.g. ``18–20, 26``."""
    runs: list[tuple[int, int]] = []
    for i in uncovered:
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    shown = [str(values[a]) if a == b else f"{values[a]}–{values[b]}" for a, b in runs[:10]]
    return ", ".join(shown) + (", …" if len(runs) > 10 else "")


def _pre_randomization_fields(protocol: Protocol) -> set[str]:
    """Return the ids of fields collected at a visit before (or at) randomization."""
    forms = {
        form_id
        for visit in protocol.schedule.visits
        if visit.anchor != "randomization" or visit.day <= 0
        for form_id in visit.forms
    }
    return {f.id for form in protocol.forms if form.id in forms for f in form.fields}


def _check_eligibility(ctx: _Context) -> None:
    early = _pre_randomization_fields(ctx.protocol)
    for i, criterion in enumerate(ctx.protocol.eligibility):
        path: Path = ("eligibility", i, "expression")
        check_expression(ctx, criterion.expression, path)
        try:
            fields = parse(criterion.expression).fields if criterion.expression else frozenset()
        except ExpressionError:
            continue
        late = sorted(f for f in fields if f in ctx.fields and f not in early)
        if late:
            ctx.reporter.warning(path, f"criterion '{criterion.id}' uses {', '.join(late)}, "
                                 "not collected at any visit before randomization")


def _check_visit_ref(ctx: _Context, visit_id: str | None, path: Path) -> None:
    if visit_id and visit_id not in ctx.visits:
        ctx.reporter.error(path, f"unknown visit '{visit_id}'{suggest(visit_id, set(ctx.visits))}")


def _check_field_ref(ctx: _Context, field_id: str | None, path: Path) -> None:
    if field_id and field_id not in ctx.fields:
        ctx.reporter.error(path, f"unknown field '{field_id}'{suggest(field_id, set(ctx.fields))}")


def _check_streams(ctx: _Context) -> None:
    r = ctx.reporter
    per_protocol = 0
    for i, stream in enumerate(ctx.protocol.device_streams):
        base: Path = ("device_streams", i)
        if stream.min is not None and stream.max is not None and stream.min > stream.max:
            r.error((*base, "min"), f"min {stream.min:g} is greater than max {stream.max:g}")
        rule = stream.adherence
        if rule is None:
            continue
        path: Path = (*base, "adherence")
        per_protocol += rule.defines_per_protocol
        if rule.metric == "fraction_of_days_meeting_minimum":
            if rule.daily_minimum is None:
                r.error((*path, "metric"), "fraction_of_days_meeting_minimum needs daily_minimum")
            if not 0 < rule.threshold <= 1:
                r.error((*path, "threshold"),
                        f"a fraction of days must be in (0, 1], got {rule.threshold:g}")
        elif rule.daily_minimum is not None:
            r.error((*path, "daily_minimum"), f"daily_minimum is not used by metric {rule.metric}")
        _check_visit_ref(ctx, rule.window_start_visit, (*path, "window_start_visit"))
        _check_visit_ref(ctx, rule.window_end_visit, (*path, "window_end_visit"))
        if rule.window_start_visit in ctx.visits and rule.window_end_visit in ctx.visits:
            start = ctx.protocol.visit(rule.window_start_visit or "").day
            end = ctx.protocol.visit(rule.window_end_visit or "").day
            if end <= start:
                r.error((*path, "window_end_visit"), "the window must end after it starts")
        check_expression(ctx, rule.condition, (*path, "condition"))
    if per_protocol > 1:
        r.error(("device_streams",), "only one adherence rule may define the per-protocol set")


def _check_endpoints(ctx: _Context) -> None:
    p, r = ctx.protocol, ctx.reporter
    factor_ids = {f.id for f in p.randomization.factors}
    arm_codes = {a.code for a in p.arms}
    orders: list[tuple[str, Path]] = []
    if p.endpoints and not p.primary_endpoints:
        r.error(("endpoints",), "at least one endpoint must have role primary")
    for i, endpoint in enumerate(p.endpoints):
        base: Path = ("endpoints", i, "analysis")
        a = endpoint.analysis
        for k, field_id in enumerate(a.outcome_fields):
            _check_field_ref(ctx, field_id, (*base, "outcome_fields", k))
        for k, visit_id in enumerate(a.visits):
            _check_visit_ref(ctx, visit_id, (*base, "visits", k))
        for k, field_id in enumerate(a.covariates):
            _check_field_ref(ctx, field_id, (*base, "covariates", k))
        for k, factor_id in enumerate(a.strata):
            if factor_id not in factor_ids and factor_id != "site":
                r.error((*base, "strata", k), f"unknown stratification factor '{factor_id}'"
                        f"{suggest(factor_id, factor_ids | {'site'})}")
        _check_field_ref(ctx, a.baseline_field, (*base, "baseline_field"))
        _check_visit_ref(ctx, a.baseline_visit, (*base, "baseline_visit"))
        _check_field_ref(ctx, a.event_date_field, (*base, "event_date_field"))
        if a.reference_arm and a.reference_arm not in arm_codes:
            r.error((*base, "reference_arm"), f"unknown reference arm '{a.reference_arm}'"
                    f"{suggest(a.reference_arm, arm_codes)}")
        check_expression(ctx, a.responder_if, (*base, "responder_if"))
        check_expression(ctx, a.event_if, (*base, "event_if"))
        if a.multiplicity_order is not None:
            orders.append((str(a.multiplicity_order), (*base, "multiplicity_order")))
        _check_collection(ctx, endpoint, base)
        _check_model(ctx, endpoint, base)
        for k, subgroup in enumerate(a.subgroups):
            _check_levels(ctx, subgroup.levels, (*base, "subgroups", k), require_rules=True)
        _duplicates(r, "sensitivity analysis id", (
            (s.id, (*base, "sensitivity", k, "id")) for k, s in enumerate(a.sensitivity)
        ))
        _duplicates(r, "subgroup id", (
            (s.id, (*base, "subgroups", k, "id")) for k, s in enumerate(a.subgroups)
        ))
        _check_estimand_events(ctx, endpoint, ("endpoints", i, "estimand"))
    _duplicates(r, "multiplicity_order", orders)


_DETECTION_KEYS: dict[str, tuple[str, ...]] = {
    "form_field": ("condition", "date_field"),
    "repeating_form": ("form", "condition", "date_field"),
    "device_inactivity": ("stream", "inactive_days"),
    "withdrawal": ("reasons",),
}
_REQUIRED_DETECTION_KEYS: dict[str, tuple[str, ...]] = {
    "form_field": ("condition",),
    "repeating_form": ("form", "date_field"),
    "device_inactivity": ("stream", "inactive_days"),
    "withdrawal": (),
}


def _check_intercurrent_events(ctx: _Context) -> None:
    """Each event names a detection its data can support: fields, forms and streams exist."""
    p, r = ctx.protocol, ctx.reporter
    _duplicates(r, "intercurrent event id", (
        (e.id, ("intercurrent_events", k, "id")) for k, e in enumerate(p.intercurrent_events)
    ))
    streams = {s.id for s in p.device_streams}
    forms = {f.id: f for f in p.forms}
    for k, event in enumerate(p.intercurrent_events):
        base: Path = ("intercurrent_events", k)
        kind = event.detected_by
        given = {
            "condition": event.condition is not None, "date_field": event.date_field is not None,
            "form": event.form is not None, "stream": event.stream is not None,
            "inactive_days": event.inactive_days is not None, "reasons": bool(event.reasons),
        }
        for key, is_set in given.items():
            if is_set and key not in _DETECTION_KEYS[kind]:
                r.error((*base, key), f"{key} is not used by detected_by: {kind}")
        for key in _REQUIRED_DETECTION_KEYS[kind]:
            if not given[key]:
                r.error((*base, "detected_by"), f"detected_by: {kind} needs {key}")
        if kind == "repeating_form" and event.form is not None:
            log = forms.get(event.form)
            if log is None:
                r.error((*base, "form"), f"unknown form '{event.form}'"
                        f"{suggest(event.form, set(forms))}")
            elif not log.repeating:
                r.error((*base, "form"), f"form '{event.form}' is not a repeating (log) form")
            else:
                own = {f.id for f in log.fields}
                if event.date_field and event.date_field not in own:
                    r.error((*base, "date_field"), f"field '{event.date_field}' is not in form "
                            f"'{event.form}'{suggest(event.date_field, own)}")
                _check_record_condition(ctx, event.condition, own, event.form,
                                        (*base, "condition"))
        elif kind == "form_field":
            check_expression(ctx, event.condition, (*base, "condition"))
        if event.date_field and kind == "form_field":
            _check_field_ref(ctx, event.date_field, (*base, "date_field"))
        date = ctx.fields.get(event.date_field or "")
        if date is not None and date.type not in ("date", "datetime"):
            r.error((*base, "date_field"), f"field '{event.date_field}' is a {date.type} "
                    "field, not a date")
        if event.stream is not None and event.stream not in streams:
            r.error((*base, "stream"), f"unknown device stream '{event.stream}'"
                    f"{suggest(event.stream, streams)}")


def _check_record_condition(ctx: _Context, condition: str | None, own: set[str], form: str,
                            path: Path) -> None:
    check_expression(ctx, condition, path)
    if not condition:
        return
    try:
        used = parse(condition).fields
    except ExpressionError:
        return
    foreign = sorted(f for f in used if f in ctx.fields and f not in own)
    if foreign:
        ctx.reporter.error(path, f"a record condition can only use fields of form '{form}', "
                           f"not {', '.join(foreign)}")


def _check_estimand_events(ctx: _Context, endpoint: Endpoint, base: Path) -> None:
    r = ctx.reporter
    declared = {e.id for e in ctx.protocol.intercurrent_events}
    events = endpoint.estimand.intercurrent_events
    _duplicates(r, "intercurrent event", (
        (e.event, (*base, "intercurrent_events", k, "event")) for k, e in enumerate(events)
    ))
    model = endpoint.analysis.model
    for k, item in enumerate(events):
        path: Path = (*base, "intercurrent_events", k)
        if item.event not in declared:
            r.error((*path, "event"), f"unknown intercurrent event '{item.event}' (declare it "
                    "under the top-level intercurrent_events with how it is detected)"
                    f"{suggest(item.event, declared)}")
        if item.strategy == "principal_stratum":
            r.error((*path, "strategy"), "principal_stratum needs a causal estimation method, "
                    "and none is implemented: analysing only the participants without the "
                    "event is not a principal stratum (ICH E9(R1) A.3.1); choose another "
                    "strategy, or analyse the stratum outside the platform")
        if item.strategy == "composite":
            if model in SURVIVAL_MODELS:
                if item.composite_value is not None:
                    r.error((*path, "composite_value"), f"a composite event of a {model} "
                            "endpoint is an event at its date; remove composite_value")
            elif item.composite_value is None:
                r.error((*path, "strategy"), "composite needs composite_value (the outcome "
                        "the event stands for, e.g. 0 = non-responder)")
            elif model in BINARY_MODELS and item.composite_value not in (0.0, 1.0):
                r.error((*path, "composite_value"), f"a {model} outcome is 0 or 1, not "
                        f"{item.composite_value:g}")
            elif model == "gee_per_eye":
                r.error((*path, "strategy"), "composite is not supported for gee_per_eye")
        elif item.composite_value is not None:
            r.error((*path, "composite_value"), "composite_value is only used by the "
                    "composite strategy")


def _check_multiplicity(ctx: _Context) -> None:
    """The family names real endpoints and active arms; graphical weights form a valid graph."""
    p, r = ctx.protocol, ctx.reporter
    spec = p.multiplicity
    if spec is None:
        return
    base: Path = ("multiplicity",)
    endpoints = {e.id: e for e in p.endpoints}
    for i, item in enumerate(p.endpoints):
        if item.analysis.multiplicity_order is not None:
            r.error(("endpoints", i, "analysis", "multiplicity_order"), "multiplicity_order is "
                    "not used when 'multiplicity' declares the confirmatory family (its "
                    "hypotheses are in testing order)")
    arm_codes = {a.code for a in p.arms}
    _duplicates(r, "hypothesis id", (
        (h.id, (*base, "hypotheses", k, "id")) for k, h in enumerate(spec.hypotheses)
    ))
    _duplicates(r, "hypothesis (endpoint, arm)", (
        (f"{h.endpoint}/{h.arm}", (*base, "hypotheses", k, "arm"))
        for k, h in enumerate(spec.hypotheses)
    ))
    for k, h in enumerate(spec.hypotheses):
        path: Path = (*base, "hypotheses", k)
        endpoint = endpoints.get(h.endpoint)
        if endpoint is None:
            r.error((*path, "endpoint"), f"unknown endpoint '{h.endpoint}'"
                    f"{suggest(h.endpoint, set(endpoints))}")
        elif endpoint.analysis.model == "km_logrank":
            r.error((*path, "endpoint"), "km_logrank gives no arm contrast to test; use cox")
        if h.arm not in arm_codes:
            r.error((*path, "arm"), f"unknown arm '{h.arm}'{suggest(h.arm, arm_codes)}")
        elif endpoint is not None:
            reference = endpoint.analysis.reference_arm or (
                p.control_arm.code if p.control_arm else p.arms[-1].code)
            if h.arm == reference:
                r.error((*path, "arm"), f"arm '{h.arm}' is the reference arm of "
                        f"'{h.endpoint}': name an active arm")
        weighted = spec.procedure in ("graphical", "bonferroni")
        if h.weight is not None and not weighted:
            r.error((*path, "weight"), f"weights are not used by {spec.procedure}")
        if spec.procedure == "graphical" and h.weight is None:
            r.error((*path, "weight"), "the graphical procedure needs every initial weight")
    weights = [h.weight for h in spec.hypotheses if h.weight is not None]
    if weights and sum(weights) > 1 + 1e-9:
        r.error((*base, "hypotheses"), f"initial weights sum to {sum(weights):g}, more than 1")
    if spec.procedure == "bonferroni" and weights and len(weights) != len(spec.hypotheses):
        r.error((*base, "hypotheses"), "give a weight to every hypothesis or to none")
    if spec.transitions and spec.procedure != "graphical":
        r.error((*base, "transitions"), f"transitions are not used by {spec.procedure}")
    ids = {h.id for h in spec.hypotheses}
    out: dict[str, float] = {}
    for k, t in enumerate(spec.transitions):
        path = (*base, "transitions", k)
        for key, value in (("from", t.source), ("to", t.target)):
            if value not in ids:
                r.error((*path, key), f"unknown hypothesis '{value}'{suggest(value, ids)}")
        if t.source == t.target:
            r.error((*path, "to"), "a hypothesis cannot pass its level to itself")
        out[t.source] = out.get(t.source, 0.0) + t.weight
    _duplicates(r, "transition", (
        (f"{t.source}->{t.target}", (*base, "transitions", k, "to"))
        for k, t in enumerate(spec.transitions)
    ))
    for source, total in out.items():
        if total > 1 + 1e-9:
            r.error((*base, "transitions"), f"weights leaving '{source}' sum to {total:g}, "
                    "more than 1")


def _check_collection(ctx: _Context, endpoint: Endpoint, base: Path) -> None:
    """Require the outcome at every analysis visit and the baseline at the baseline visit."""
    a = endpoint.analysis
    for k, visit_id in enumerate(a.visits):
        if visit_id not in ctx.visits:
            continue
        for field_id in a.outcome_fields:
            if field_id in ctx.fields and not _is_collected_at(ctx, field_id, visit_id):
                ctx.reporter.error((*base, "visits", k),
                                   f"outcome field '{field_id}' is not collected at visit "
                                   f"'{visit_id}'")
    if a.baseline_visit not in ctx.visits:
        return
    baseline_fields = (a.baseline_field,) if a.baseline_field else a.outcome_fields
    for field_id in baseline_fields:
        if field_id in ctx.fields and not _is_collected_at(ctx, field_id, a.baseline_visit or ""):
            ctx.reporter.error((*base, "baseline_visit"),
                               f"baseline field '{field_id}' is not collected at visit "
                               f"'{a.baseline_visit}'")


def _check_model(ctx: _Context, endpoint: Endpoint, base: Path) -> None:
    r = ctx.reporter
    a = endpoint.analysis
    model = a.model
    if model == "mmrm":
        if a.covariance is None:
            r.error((*base, "model"), "mmrm needs a covariance structure (covariance: ...)")
        if len(a.visits) < 2:
            r.error((*base, "visits"), "mmrm needs at least two post-baseline visits")
    elif a.covariance is not None:
        r.error((*base, "covariance"), f"covariance is only used by mmrm, not {model}")
    if model == "gee_per_eye" and len(a.outcome_fields) != 2:
        r.error((*base, "outcome_fields"),
                "gee_per_eye needs two outcome fields: right eye, then left eye")
    if model in BINARY_MODELS and not a.responder_if:
        outcome = ctx.fields.get(a.outcome_fields[0]) if a.outcome_fields else None
        if outcome is not None and outcome.type != "yesno":
            r.error((*base, "model"), f"{model} needs a binary outcome: give responder_if or "
                    "a yesno outcome field")
    if a.responder_if and model not in BINARY_MODELS:
        r.error((*base, "responder_if"), f"responder_if is not used by model {model}")
    if model in SURVIVAL_MODELS:
        if not a.event_if:
            r.error((*base, "model"), f"{model} needs event_if")
        if not a.event_date_field:
            r.error((*base, "model"), f"{model} needs event_date_field")
    elif a.event_if or a.event_date_field:
        key = "event_if" if a.event_if else "event_date_field"
        r.error((*base, key), f"{key} is only used by survival models, not {model}")
    if a.change_from_baseline and not a.baseline_visit:
        r.error((*base, "change_from_baseline"), "change_from_baseline needs baseline_visit")
    if a.baseline_field and not a.baseline_visit:
        r.error((*base, "baseline_field"), "baseline_field needs baseline_visit")
    if model == "gee_per_eye" and a.baseline_field:
        r.error((*base, "baseline_field"), "gee_per_eye takes each eye's baseline from its own "
                "outcome field at baseline_visit; remove baseline_field")
    if a.sidedness == "one_sided":
        # A one-sided test needs the direction of benefit, which the language cannot state:
        # rather than test in a guessed direction, refuse (every key has an effect or is refused).
        r.error((*base, "sidedness"), "one-sided tests are not supported (the direction of "
                "benefit cannot be stated); use two_sided with alpha = twice the one-sided level")


def _check_amendment(ctx: _Context) -> None:
    amendment = ctx.protocol.amendment
    if amendment is not None and amendment.transition == "after_reconsent" and not (
        ctx.protocol.consents
    ):
        ctx.reporter.error(("amendment", "transition"),
                           "after_reconsent needs the consent documents to re-sign (consents)")


def _check_consents(ctx: _Context) -> None:
    _duplicates(ctx.reporter, "consent document", (
        (f"{c.id}/{c.language}", ("consents", i, "language"))
        for i, c in enumerate(ctx.protocol.consents)
    ))
    for i, document in enumerate(ctx.protocol.consents):
        _duplicates(ctx.reporter, "question id", (
            (q.id, ("consents", i, "comprehension", j, "id"))
            for j, q in enumerate(document.comprehension)
        ))
        for j, question in enumerate(document.comprehension):
            codes = [c.code for c in question.choices]
            _duplicates(ctx.reporter, "choice code", (
                (c.code, ("consents", i, "comprehension", j, "choices", k, "code"))
                for k, c in enumerate(question.choices)
            ))
            if question.answer not in codes:
                ctx.reporter.error(
                    ("consents", i, "comprehension", j, "answer"),
                    f"answer '{question.answer}' is not one of the choices: {', '.join(codes)}",
                )


def count_strata(protocol: Protocol) -> int | None:
    """Return the number of randomization strata, or None when sites are unknown in advance."""
    spec = protocol.randomization
    levels = [len(f.levels) for f in spec.factors]
    if spec.stratify_by_site:
        if not protocol.sites.initial_sites:
            return None
        levels.append(len(protocol.sites.initial_sites))
    return reduce(lambda a, b: a * b, levels, 1)


def strata_warning(protocol: Protocol) -> str | None:
    """Return a warning when strata are too many for the planned n (spec §6.6), else None.

    Blocks only balance within a stratum; below two full blocks per stratum on average the
    design degrades towards simple randomization and minimization is the better choice.
    """
    spec = protocol.randomization
    if spec.method != "permuted_block" or protocol.sample_size is None or not spec.block_sizes:
        return None
    n_strata = count_strata(protocol)
    if n_strata is None or n_strata <= 1:
        return None
    per_stratum = protocol.sample_size.n / n_strata
    limit = 2 * max(spec.block_sizes)
    if per_stratum >= limit:
        return None
    return (f"{n_strata} strata for a planned n of {protocol.sample_size.n} leave "
            f"{per_stratum:.1f} participants per stratum, fewer than two blocks of the largest "
            f"size ({limit}); stratified blocks will balance poorly — consider fewer factors "
            "or minimization")


def _warn_about_design(ctx: _Context) -> None:
    p, r = ctx.protocol, ctx.reporter
    message = strata_warning(p)
    if message:
        r.warning(("randomization", "factors"), message)
    if p.randomization.method == "minimization" and len(set(p.reduced_ratio)) > 1:
        r.warning(("randomization", "method"),
                  "minimization with an unequal ratio does not preserve the allocation ratio "
                  "at every step (Kuznetsova & Tymofyeyev 2012); consider permuted blocks or "
                  "the block urn design")
    confirmatory: list[int] = []
    for i, endpoint in enumerate(p.endpoints):
        if endpoint.role in ("primary", "key_secondary"):
            confirmatory.append(i)
        if endpoint.role == "primary" and not endpoint.analysis.sensitivity:
            r.warning(("endpoints", i, "analysis"),
                      f"primary endpoint '{endpoint.id}' has no sensitivity analysis of its "
                      "estimand (ICH E9(R1) A.5.2)")
    if len(confirmatory) > 1 and p.multiplicity is None:
        for i in confirmatory:
            if p.endpoints[i].analysis.multiplicity_order is None:
                r.warning(("endpoints", i, "analysis"),
                          f"confirmatory endpoint '{p.endpoints[i].id}' has no "
                          "multiplicity_order although several endpoints are confirmatory")


# ------------------------------------------------------------------------------ languages

SIMPLIFIED = ("zh", "zh-Hans")


def label_texts(protocol: Protocol) -> list[tuple[Path, dict[str, str]]]:
    """Every text of the protocol: (document path of the label, language -> text)."""
    from .canonical import to_canonical_dict
    from .structure import PROTOCOL, ListOf, Obj

    found: list[tuple[Path, dict[str, str]]] = []

    def walk(value: object, kind: object, path: Path) -> None:
        if isinstance(kind, Obj) and isinstance(value, dict):
            if kind.extra is not None:
                found.append((path, {k: v for k, v in value.items() if isinstance(v, str)}))
                return
            for prop in kind.props:
                if prop.name in value:
                    walk(value[prop.name], prop.kind, (*path, prop.name))
        elif isinstance(kind, ListOf) and isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, kind.item, (*path, index))

    walk(to_canonical_dict(protocol), PROTOCOL, ())
    return found


def language_coverage(protocol: Protocol) -> dict[str, tuple[int, int]]:
    """Per declared language (English first): (texts written in it, texts in all)."""
    texts = label_texts(protocol)
    declared = protocol.languages if protocol.languages is not None else ("zh-Hans",)
    out = {"en": (len(texts), len(texts))}
    for language in declared:
        keys = ("zh",) if language in SIMPLIFIED else (language,)
        out[language] = (sum(1 for _, t in texts if any(k in t for k in keys)), len(texts))
    return out


def _check_languages(ctx: _Context) -> None:
    """A text in a language the protocol does not declare is refused; each declared language
    missing texts is reported with its coverage (those texts show in English)."""
    protocol = ctx.protocol
    declared = protocol.languages
    if declared is not None:
        _duplicates(ctx.reporter, "language", (
            ("zh-Hans" if lang in SIMPLIFIED else lang, ("languages", i))
            for i, lang in enumerate(declared)
        ))
        for i, language in enumerate(declared):
            if language == "en":
                ctx.reporter.error(("languages", i), "English is always a language; do not list it")
    allowed = set(declared) if declared is not None else {"zh-Hans"}
    if allowed & set(SIMPLIFIED):
        allowed |= set(SIMPLIFIED)
    hint = "add it under languages" if declared is not None else (
        "declare the protocol's languages, e.g. languages: [zh-Hans, zh-Hant]"
    )
    for path, texts in label_texts(protocol):
        for language in texts:
            if language != "en" and language not in allowed:
                ctx.reporter.error(
                    (*path, language),
                    f"text in '{language}', which the protocol does not declare ({hint})",
                )
    if declared is None:
        return
    for i, (language, (done, total)) in enumerate(
        (lang, cov) for lang, cov in language_coverage(protocol).items() if lang != "en"
    ):
        if done < total:
            ctx.reporter.warning(
                ("languages", i),
                f"{language}: {done} of {total} texts translated ({100 * done // total}%); "
                "the others show in English",
            )
