"""The builder's inputs for the protocol's list sections, as a declarative codec per section.

Each section (eligibility criteria, endpoints with their estimand and analysis, stratification
and minimization factors, the minimization settings, edit checks, consent documents, device
streams) names the keys it has inputs for: ``to_inputs`` turns one item of the document into
the text of those inputs, ``from_inputs`` turns posted inputs back into changes (path -> value,
None removes the key) and ``put_item`` applies them to the document, keeping every key without
an input as it was. A value an input cannot show without loss (a label with a line break in a
one-line input, an empty list, a level with keys of its own) gets no input: the page shows it
read-only, nothing is posted for it, and it stays as written. So ``YAML -> inputs -> YAML`` is
the identity and the YAML text and the builder can be mixed; the loader checks the result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .editing import Data, EditError
from .model import (
    ADHERENCE_METRICS,
    ANALYSIS_MODELS,
    ANALYSIS_SETS,
    CADENCES,
    CRITERION_KINDS,
    ENDPOINT_ROLES,
    IMBALANCE_MEASURES,
    SIDEDNESS,
    SIGNERS,
    STREAM_KINDS,
)

Path = tuple[str, ...]
Changes = dict[Path, Any]
Errors = dict[str, list[str]]

LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class Input:
    """One input: its name (unique in the section), the key path in the item, its kind."""

    name: str
    path: Path
    kind: str  # text expr choice int number flag list label longlabel rows levels
    options: tuple[str, ...] = ()  # choice: the allowed values; rows: the column keys
    required: bool = False


@dataclass(frozen=True)
class Section:
    """A list (or one mapping) of the document and the inputs of its items."""

    name: str
    location: Path  # keys from the top; "forms" sections are placed by their scope
    inputs: tuple[Input, ...]
    key: tuple[str, ...] = ("id",)
    scope: tuple[str, ...] = ()  # inputs placing the item (edit checks: form, field)
    is_mapping: bool = False

    def input(self, name: str) -> Input:
        return next(i for i in self.inputs if i.name == name)


def _i(name: str, kind: str = "text", *options: str, path: str = "", required: bool = False
       ) -> Input:
    return Input(name, tuple((path or name).split(".")), kind, options, required)


SECTIONS: dict[str, Section] = {
    s.name: s
    for s in (
        Section("eligibility", ("eligibility",), (
            _i("id", required=True),
            _i("kind", "choice", *CRITERION_KINDS, required=True),
            _i("text", "label", required=True),
            _i("expression", "expr", required=True),
        )),
        Section("endpoints", ("endpoints",), (
            _i("id", required=True),
            _i("name", "label", required=True),
            _i("role", "choice", *ENDPOINT_ROLES, required=True),
            _i("population", "label", path="estimand.population"),
            _i("analysis_set", "choice", *ANALYSIS_SETS, path="estimand.analysis_set"),
            _i("variable", "label", path="estimand.variable"),
            _i("events", "rows", "event", "strategy", "composite_value",
               path="estimand.intercurrent_events"),
            _i("summary", "label", path="estimand.summary"),
            _i("model", "choice", *ANALYSIS_MODELS, path="analysis.model"),
            _i("outcome_fields", "list", path="analysis.outcome_fields"),
            _i("visits", "list", path="analysis.visits"),
            _i("baseline_field", path="analysis.baseline_field"),
            _i("baseline_visit", path="analysis.baseline_visit"),
            _i("change_from_baseline", "flag", path="analysis.change_from_baseline"),
            _i("responder_if", "expr", path="analysis.responder_if"),
            _i("covariates", "list", path="analysis.covariates"),
            _i("strata", "list", path="analysis.strata"),
            _i("reference_arm", path="analysis.reference_arm"),
            _i("alpha", "number", path="analysis.alpha"),
            _i("sidedness", "choice", *SIDEDNESS, path="analysis.sidedness"),
            _i("multiplicity_order", "int", path="analysis.multiplicity_order"),
        )),
        Section("factors", ("randomization", "factors"), (
            _i("id", required=True),
            _i("label", "label", required=True),
            _i("field", required=True),
            _i("weight", "number"),
            _i("levels", "levels", required=True),
        )),
        Section("minimization", ("randomization",), (
            _i("stratify_by_site", "flag"),
            _i("site_weight", "number"),
            _i("imbalance", "choice", *IMBALANCE_MEASURES),
            _i("p", "number"),
        ), key=(), is_mapping=True),
        Section("checks", ("forms",), (
            _i("form", required=True),
            _i("field"),
            _i("id", required=True),
            _i("condition", "expr", required=True),
            _i("severity", "choice", "error", "warning"),
            _i("message", "label", required=True),
        ), scope=("form", "field")),
        Section("consents", ("consents",), (
            _i("id", required=True),
            _i("language", required=True),
            _i("version", required=True),
            _i("signer", "choice", *SIGNERS),
            _i("title", "label", required=True),
            _i("body", "longlabel"),
        ), key=("id", "language")),
        Section("streams", ("device_streams",), (
            _i("id", required=True),
            _i("kind", "choice", *STREAM_KINDS, required=True),
            _i("label", "label", required=True),
            _i("unit", required=True),
            _i("cadence", "choice", *CADENCES, required=True),
            _i("min", "number"),
            _i("max", "number"),
            _i("adherence_metric", "choice", *ADHERENCE_METRICS, path="adherence.metric"),
            _i("adherence_threshold", "number", path="adherence.threshold"),
            _i("daily_minimum", "number", path="adherence.daily_minimum"),
            _i("window_start_visit", path="adherence.window_start_visit"),
            _i("window_end_visit", path="adherence.window_end_visit"),
            _i("defines_per_protocol", "flag", path="adherence.defines_per_protocol"),
        )),
    )
}

_MISSING = object()


# --- values <-> input text -------------------------------------------------------------------

def _is_line(value: object) -> bool:
    """A string a one-line input shows as it is (stripped, no line breaks, not empty)."""
    return isinstance(value, str) and value == value.strip() and value != "" and "\n" not in value


def _number_text(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return repr(value)


def _parse_number(raw: str, whole: bool) -> int | float:
    if re.fullmatch(r"[+-]?\d+", raw):
        return int(raw)
    if whole:
        raise ValueError(raw)
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


def _cell(value: object) -> str | None:
    """One cell of a rows/levels line: a plain line without the separator."""
    text = _number_text(value) if not isinstance(value, str) else value
    if text is None or not _is_line(text) or "|" in text:
        return None
    return text


def _label_parts(label: object, long: bool = False) -> dict[str, str] | None:
    if not isinstance(label, dict) or not label:
        return None
    out = {}
    for lang, text in label.items():
        if not (isinstance(lang, str) and LANGUAGE.match(lang)):
            return None
        if long:
            if not (isinstance(text, str) and text.strip() == text and text):
                return None
        elif not _is_line(text):
            return None
        out[lang] = text
    return out


def _rows_text(rows: object, columns: tuple[str, ...]) -> str | None:
    if not isinstance(rows, list) or not rows:
        return None
    lines = []
    for row in rows:
        if not isinstance(row, dict) or not set(row) <= set(columns) or columns[0] not in row:
            return None
        present = [c for c in columns if c in row]
        if present != list(columns[: len(present)]):  # only trailing columns may be left out
            return None
        cells = [_cell(row[c]) for c in present]
        numeric = [c.endswith("value") for c in present]
        if any(c is None for c in cells) or any(
            isinstance(row[c], str) == is_number
            for c, is_number in zip(present, numeric, strict=True)
        ):
            return None
        lines.append(" | ".join(str(c) for c in cells))
    return "\n".join(lines)


def _levels_text(levels: object) -> str | None:
    """``code | when-expression or * | en: text | zh: text`` one level a line."""
    if not isinstance(levels, list) or not levels:
        return None
    lines = []
    for level in levels:
        if not isinstance(level, dict) or not set(level) <= {"code", "label", "when", "otherwise"}:
            return None
        if ("when" in level) == ("otherwise" in level) or level.get("otherwise", True) is not True:
            return None
        code = _cell(level.get("code"))
        rule = "*" if "otherwise" in level else _cell(level["when"])
        if code is None or rule is None or (rule == "*" and "when" in level):
            return None
        parts = [code, rule]
        if "label" in level:
            label = _label_parts(level["label"])
            if label is None or any("|" in t for t in label.values()):
                return None
            parts += [f"{lang}: {text}" for lang, text in label.items()]
        lines.append(" | ".join(parts))
    return "\n".join(lines)


def _get(item: Mapping[str, Any], path: Path) -> Any:
    value: Any = item
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def to_inputs(section: Section, item: Mapping[str, Any]) -> dict[str, str]:
    """The inputs' text for one item; an input is left out when its value would not survive
    the round trip (it stays in the YAML as written). Labels give one input per language,
    named ``<name>.<language>``."""
    out: dict[str, str] = {}
    for spec in section.inputs:
        value = _get(item, spec.path)
        if value is _MISSING or value is None:
            if spec.kind in ("label", "longlabel"):
                continue
            out[spec.name] = ""
            continue
        text: str | None
        if spec.kind in ("text", "expr", "choice"):
            text = value if _is_line(value) else None
        elif spec.kind in ("int", "number"):
            text = _number_text(value)
            if spec.kind == "int" and not isinstance(value, int):
                text = None
        elif spec.kind == "flag":
            text = {True: "yes", False: "no"}.get(value) if isinstance(value, bool) else None
        elif spec.kind == "list":
            ok = isinstance(value, list) and value and all(
                _is_line(v) and "," not in v for v in value
            )
            text = ", ".join(value) if ok else None
        elif spec.kind in ("label", "longlabel"):
            parts = _label_parts(value, long=spec.kind == "longlabel")
            if parts is not None:
                out.update({f"{spec.name}.{lang}": t for lang, t in parts.items()})
            continue
        elif spec.kind == "rows":
            text = _rows_text(value, spec.options)
        else:
            text = _levels_text(value)
        if text is not None:
            out[spec.name] = text
    return out


def kept_inputs(section: Section, item: Mapping[str, Any]) -> list[str]:
    """The inputs ``to_inputs`` leaves out although the item has a value: shown read-only."""
    shown = to_inputs(section, item)
    return [
        spec.name
        for spec in section.inputs
        if _get(item, spec.path) not in (_MISSING, None)
        and spec.name not in shown
        and not any(k.startswith(f"{spec.name}.") for k in shown)
    ]


def _parse_rows(raw: str, columns: tuple[str, ...]) -> list[Data]:
    rows = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > len(columns) or not cells[0]:
            raise ValueError(f"line {number}: {' | '.join(columns)}")
        row: Data = {}
        for column, cell in zip(columns, cells, strict=False):
            if cell:
                try:
                    row[column] = _parse_number(cell, False) if column.endswith("value") else cell
                except ValueError:
                    raise ValueError(f"line {number}: {column} must be a number") from None
        rows.append(row)
    return rows


def _parse_levels(raw: str) -> list[Data]:
    levels = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise ValueError(f"line {number}: code | rule or * | en: text | zh: text")
        level: Data = {"code": cells[0]}
        label = {}
        for cell in cells[2:]:
            lang, sep, text = cell.partition(":")
            if not sep or not LANGUAGE.match(lang.strip()) or not text.strip():
                raise ValueError(f"line {number}: write each label as language: text")
            label[lang.strip()] = text.strip()
        if label:
            level["label"] = label
        if cells[1] == "*":
            level["otherwise"] = True
        else:
            level["when"] = cells[1]
        levels.append(level)
    return levels


def _parse(spec: Input, raw: str) -> Any:
    """The value of one posted input; ValueError says what is expected."""
    if spec.kind in ("int", "number"):
        try:
            return _parse_number(raw, spec.kind == "int")
        except ValueError:
            raise ValueError("a whole number" if spec.kind == "int" else "a number") from None
    if spec.kind == "flag":
        if raw not in ("yes", "no"):
            raise ValueError("yes, no or empty")
        return raw == "yes"
    if spec.kind == "list":
        return [v.strip() for v in raw.split(",") if v.strip()]
    if spec.kind == "rows":
        return _parse_rows(raw, spec.options)
    if spec.kind == "levels":
        return _parse_levels(raw)
    return raw  # a choice outside the options is the loader's error, at its path


def from_inputs(section: Section, posted: Mapping[str, str]) -> tuple[Changes, Errors]:
    """The changes the posted inputs make (path -> value; None removes the key) and the errors
    per input name. An input that was not posted at all changes nothing."""
    changes: Changes = {}
    errors: Errors = {}
    for spec in section.inputs:
        if spec.kind in ("label", "longlabel"):
            prefix = f"{spec.name}."
            given = {k[len(prefix):]: v for k, v in posted.items() if k.startswith(prefix)}
            if not given:  # shown read-only (kept as written), or no input at all
                continue
            label = {
                lang: (text.strip() if spec.kind == "label" else text.strip().replace("\r\n", "\n"))
                for lang, text in given.items()
                if text.strip()
            }
            bad = [lang for lang in label if not LANGUAGE.match(lang)]
            if bad:
                errors[f"{spec.name}.{bad[0]}"] = ["not a language tag"]
            elif spec.required and "en" not in label:
                errors[f"{spec.name}.en"] = ["required"]
            changes[spec.path] = label or None
            continue
        if spec.name not in posted:
            continue
        raw = posted[spec.name].strip()
        if not raw:
            if spec.required:
                errors[spec.name] = ["required"]
            changes[spec.path] = None
            continue
        try:
            value = _parse(spec, raw)
        except ValueError as exc:
            errors[spec.name] = [str(exc)]
            continue
        changes[spec.path] = value
    return changes, errors


# --- the document --------------------------------------------------------------------------

def _mapping(parent: Data, key: str, create: bool) -> Data | None:
    value = parent.get(key)
    if value is None and create:
        value = parent[key] = {}
    if value is not None and not isinstance(value, dict):
        raise EditError(f"'{key}' must be a mapping to be edited here")
    return value


def _find(items: list[Any], keys: Mapping[str, Any]) -> Data | None:
    for item in items:
        if isinstance(item, dict) and all(item.get(k) == v for k, v in keys.items()):
            return item
    return None


def _container(data: Data, section: Section, scope: Mapping[str, Any], create: bool
               ) -> list[Any] | Data | None:
    """The list the section's items live in (or its one mapping)."""
    if section.name == "checks":
        forms = data.get("forms")
        form = _find(forms if isinstance(forms, list) else [], {"id": scope.get("form")})
        if form is None:
            raise EditError(f"no form '{scope.get('form')}'")
        owner = form
        if scope.get("field"):
            fields = form.get("fields")
            field = _find(fields if isinstance(fields, list) else [], {"id": scope["field"]})
            if field is None:
                raise EditError(f"no field '{scope['field']}' in form '{scope.get('form')}'")
            owner = field
        parent: Data | None = owner
        last = "checks"
    else:
        parent = data
        for key in section.location[:-1]:
            parent = _mapping(parent, key, create)
            if parent is None:
                return None
        last = section.location[-1]
    assert parent is not None
    if section.is_mapping:
        return _mapping(parent, last, create)
    value = parent.get(last)
    if value is None and create:
        value = parent[last] = []
    if value is not None and not isinstance(value, list):
        raise EditError(f"'{last}' must be a list to be edited here")
    return value


def _set(item: Data, path: Path, value: Any) -> None:
    target = item
    for key in path[:-1]:
        nested = target.get(key)
        if not isinstance(nested, dict):
            if value is None:
                return
            nested = target[key] = {}
        target = nested
    if value is None:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value


def _prune(item: Data, path: Path) -> None:
    """Drop the mappings on ``path`` that removals left empty (an emptied adherence rule)."""
    for depth in range(len(path) - 1, 0, -1):
        parent = _get(item, path[: depth - 1]) if depth > 1 else item
        if isinstance(parent, dict) and parent.get(path[depth - 1]) == {}:
            del parent[path[depth - 1]]


def put_item(data: Data, section: Section, changes: Changes) -> None:
    """Apply one item's changes: to the item with the same key (other keys kept), or as a new
    item at the end of its list."""
    scope = {name: changes.get((name,)) for name in section.scope}
    body = {p: v for p, v in changes.items() if p[0] not in section.scope}
    container = _container(data, section, scope, create=True)
    if isinstance(container, dict):
        item: Data | None = container
    else:
        assert container is not None
        keys = {k: changes.get((k,)) for k in section.key}
        if any(v is None for v in keys.values()):
            raise EditError(f"an item of {section.name} needs {', '.join(section.key)}")
        item = _find(container, keys)
        if item is None:
            item = {}
            container.append(item)
    assert item is not None
    for path, value in body.items():
        removes = value is None and _get(item, path) is not _MISSING
        _set(item, path, value)
        if removes:
            _prune(item, path)


def items(data: Data, section: Section) -> Iterator[tuple[str, Data]]:
    """Each item of the section with its reference (``ref``: scope and key values joined by
    ``|``), in document order; nothing when the section is absent or not editable here."""
    if section.is_mapping:
        container = _get(data, section.location)
        if isinstance(container, dict):
            yield "", container
        return
    if section.name == "checks":
        for form in data.get("forms") or []:
            if not isinstance(form, dict):
                continue
            for check in form.get("checks") or []:
                if isinstance(check, dict):
                    yield f"{form.get('id')}||{check.get('id')}", {
                        "form": form.get("id"), **check}
            for field in form.get("fields") or []:
                if not isinstance(field, dict):
                    continue
                for check in field.get("checks") or []:
                    if isinstance(check, dict):
                        yield f"{form.get('id')}|{field.get('id')}|{check.get('id')}", {
                            "form": form.get("id"), "field": field.get("id"), **check}
        return
    container = _get(data, section.location)
    for item in container if isinstance(container, list) else []:
        if isinstance(item, dict):
            yield "|".join(str(item.get(k, "")) for k in section.key), item


def _split_ref(section: Section, ref: str) -> tuple[dict[str, str], dict[str, str]]:
    parts = ref.split("|")
    names = section.scope + tuple(k for k in section.key if k not in section.scope)
    if len(parts) != len(names):
        raise EditError(f"not an item of {section.name}: {ref!r}")
    values = dict(zip(names, parts, strict=True))
    scope = {n: values[n] for n in section.scope}
    return scope, {k: values[k] for k in section.key}


def find_item(data: Data, section: Section, ref: str) -> Data | None:
    """The item ``ref`` names, as ``items`` shows it (edit checks with their form and field)."""
    return next((item for r, item in items(data, section) if r == ref), None)


def remove_item(data: Data, section: Section, ref: str) -> bool:
    """Remove the item ``ref`` names (a list left empty stays, as an empty list)."""
    scope, keys = _split_ref(section, ref)
    container = _container(data, section, scope, create=False)
    if not isinstance(container, list):
        return False
    item = _find(container, keys)
    if item is None:
        return False
    container.remove(item)
    return True
