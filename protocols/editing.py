"""Edit a protocol document as plain data: the browser builder's operations.

The builder never holds a second model of the protocol: it parses the YAML text, replaces or
removes one item (a form, a field of a form, a visit, an arm) and writes the YAML back. Every
key the builder has no input for is kept as it was, so YAML written by hand and builder edits
can be mixed; what the text loses is only its comments and layout. The loader checks the
result with its usual messages.
"""

from __future__ import annotations

from typing import Any

import yaml

Data = dict[str, Any]
# libyaml when present (the same documents, several times faster on a 1,500-line protocol)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class EditError(ValueError):
    """The text cannot be edited as a protocol (not YAML, or not a mapping at the top)."""


def parse(text: str) -> Data:
    """Return the document as plain data; raise EditError when it is not a YAML mapping."""
    try:
        data = yaml.load(text, Loader=_LOADER) if text.strip() else {}  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise EditError(f"the YAML cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise EditError("the protocol must be a mapping of keys at the top level")
    return data


def dump(data: Data) -> str:
    """The document as YAML, keys in the order they were given, non-ASCII text as written."""
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=100)


def skeleton(code: str, title: Data) -> Data:
    """A new trial's starting document: identification, two arms 1:1, open label, simple
    permuted blocks and empty schedule and forms (the validator says what is still missing)."""
    return {
        "code": code,
        "title": title,
        "phase": "pilot",
        "therapeutic_area": "",
        "version": "1",
        "arms": [
            {"code": "active", "name": {"en": "Active"}, "ratio": 1},
            {"code": "control", "name": {"en": "Control"}, "ratio": 1, "is_control": True},
        ],
        "blinding": {"level": "open"},
        "randomization": {"method": "permuted_block", "block_sizes": [2, 4]},
        "schedule": {"visits": []},
        "forms": [],
    }


def put_trial(data: Data, values: Data) -> None:
    """Set identification and design keys: top-level keys as given, ``blinding.level``,
    ``randomization.method`` and ``randomization.block_sizes`` (other keys of those kept)."""
    for key in ("title", "therapeutic_area", "phase", "version", "registry_id", "languages"):
        if key in values:
            if values[key] is None:
                data.pop(key, None)
            else:
                data[key] = values[key]
    for section, key in (
        ("blinding", "level"),
        ("randomization", "method"),
        ("randomization", "block_sizes"),
    ):
        if values.get(f"{section}.{key}") is None:
            continue
        part = data.get(section)
        if not isinstance(part, dict):
            part = data[section] = {}
        part[key] = values[f"{section}.{key}"]


def _list(data: Data, key: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        value = data[key] = []
    if not isinstance(value, list):
        raise EditError(f"'{key}' must be a list to be edited here")
    return value


def _put(items: list[Any], item: Data, key: str = "id") -> None:
    """Replace the item with the same key (keeping its other keys), else append it."""
    for index, old in enumerate(items):
        if isinstance(old, dict) and old.get(key) == item[key]:
            merged = {**old, **item}
            items[index] = {k: v for k, v in merged.items() if v is not None}
            return
    items.append({k: v for k, v in item.items() if v is not None})


def _remove(items: list[Any], value: str, key: str = "id") -> bool:
    for index, old in enumerate(items):
        if isinstance(old, dict) and old.get(key) == value:
            del items[index]
            return True
    return False


def _form(data: Data, form_id: str) -> Data:
    for form in _list(data, "forms"):
        if isinstance(form, dict) and form.get("id") == form_id:
            return form
    raise EditError(f"no form '{form_id}'")


def put_form(data: Data, form: Data) -> None:
    """Add a form, or change its title, respondent and repeating flag (fields are kept)."""
    forms = _list(data, "forms")
    if not any(isinstance(f, dict) and f.get("id") == form["id"] for f in forms):
        form = {**form, "fields": form.get("fields") or []}
    _put(forms, form)


def put_field(data: Data, form_id: str, field: Data) -> None:
    """Add a field to a form, or replace the keys the builder edits of the field with its id.

    A key given as None is removed (an emptied input clears it)."""
    fields = _form(data, form_id).setdefault("fields", [])
    if not isinstance(fields, list):
        raise EditError(f"the fields of '{form_id}' must be a list")
    for index, old in enumerate(fields):
        if isinstance(old, dict) and old.get("id") == field["id"]:
            merged = {**old, **field}
            fields[index] = {k: v for k, v in merged.items() if v is not None}
            return
    fields.append({k: v for k, v in field.items() if v is not None})


def remove_field(data: Data, form_id: str, field_id: str) -> bool:
    return _remove(_form(data, form_id).get("fields") or [], field_id)


def remove_form(data: Data, form_id: str) -> bool:
    return _remove(_list(data, "forms"), form_id)


def put_visit(data: Data, visit: Data) -> None:
    schedule = data.get("schedule")
    if schedule is None:
        schedule = data["schedule"] = {}
    if not isinstance(schedule, dict):
        raise EditError("'schedule' must be a mapping to be edited here")
    _put(_list(schedule, "visits"), visit)


def remove_visit(data: Data, visit_id: str) -> bool:
    schedule = data.get("schedule")
    return isinstance(schedule, dict) and _remove(_list(schedule, "visits"), visit_id)


def put_arm(data: Data, arm: Data) -> None:
    _put(_list(data, "arms"), arm, key="code")


def remove_arm(data: Data, code: str) -> bool:
    return _remove(_list(data, "arms"), code, key="code")
