"""Differences between two protocol versions, and the amendment gate.

``diff_protocols`` lists every change (added, removed, changed) with a readable path such as
``forms[adas_cog].fields[adas_q01].label.en``; lists of objects are matched by id/code, not by
position. Changes that could break captured data or allocations carry ``is_breaking`` and a stable
``id`` (``field_type:moca_total``). ``check_amendment`` keeps only those that really break given
the data already captured, minus the ones the sponsor explicitly accepted.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from .canonical import to_canonical_dict
from .model import Protocol

ChangeKind = Literal["added", "removed", "changed"]

#: Identity key of the objects in each keyed list.
_IDENTITY_KEYS = ("id", "code")


@dataclass(frozen=True)
class Change:
    """One difference between two protocol versions."""

    kind: ChangeKind
    path: str
    old: Any
    new: Any
    description: str
    is_breaking: bool = False
    breaking_reason: str | None = None
    id: str = ""


def _identity(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    if "language" in item and "id" in item:
        return f"{item['id']}/{item['language']}"
    for key in _IDENTITY_KEYS:
        if isinstance(item.get(key), str):
            return str(item[key])
    return None


def _keyed(items: list[Any]) -> dict[str, Any] | None:
    keys = [_identity(item) for item in items]
    if not items or any(k is None for k in keys) or len(set(keys)) != len(keys):
        return None
    return {str(k): item for k, item in zip(keys, items)}


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _walk(old: Any, new: Any, path: str) -> Iterator[Change]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else key
            if key not in new:
                yield Change("removed", sub, old[key], None, f"removed {sub}")
            elif key not in old:
                yield Change("added", sub, None, new[key], f"added {sub} = {_short(new[key])}")
            else:
                yield from _walk(old[key], new[key], sub)
        return
    if isinstance(old, list) and isinstance(new, list):
        old_keyed, new_keyed = _keyed(old), _keyed(new)
        if (old_keyed is not None and (new_keyed is not None or not new)) or (
            new_keyed is not None and not old
        ):
            old_map = old_keyed or {}
            new_map = new_keyed or {}
            for key in old_map:
                if key not in new_map:
                    yield Change("removed", f"{path}[{key}]", old_map[key], None,
                                 f"removed {path}[{key}]")
            for key, item in new_map.items():
                if key not in old_map:
                    yield Change("added", f"{path}[{key}]", None, item, f"added {path}[{key}]")
                else:
                    yield from _walk(old_map[key], item, f"{path}[{key}]")
            if [k for k in old_map if k in new_map] != [k for k in new_map if k in old_map]:
                yield Change("changed", f"{path}.order", list(old_map), list(new_map),
                             f"reordered {path}")
            return
    if old != new:
        yield Change("changed", path, old, new, f"{path}: {_short(old)} → {_short(new)}")


def _classify(change: Change, old: Protocol, new: Protocol) -> Change:
    parts = change.path.replace("]", "").replace("[", ".").split(".")
    new_fields = new.field_index()
    reason: str | None = None
    ident = change.path
    is_wording = bool({"name", "description", "label"} & set(parts))
    if parts[0] == "arms" and not is_wording:
        ident, reason = "arms", "changes the arms after the first allocation"
    elif parts[0] == "randomization" and not is_wording:
        ident, reason = "randomization", "changes the randomization model after the first " \
            "allocation"
    elif parts[0] == "forms" and len(parts) == 2 and change.kind == "removed":
        lost = [f.id for f in old.form(parts[1]).fields if f.id not in new_fields]
        if lost:
            ident = f"form_removed:{parts[1]}"
            reason = f"removes form '{parts[1]}' and its fields {', '.join(lost)}"
    elif parts[0] == "forms" and len(parts) >= 4 and parts[2] == "fields":
        field_id = parts[3]
        if len(parts) == 4 and change.kind == "removed" and field_id not in new_fields:
            ident, reason = f"field_removed:{field_id}", f"removes field '{field_id}'"
        elif len(parts) == 5 and parts[4] == "type":
            ident = f"field_type:{field_id}"
            reason = f"changes the type of field '{field_id}' from {change.old} to {change.new}"
        elif len(parts) == 6 and parts[4] == "choices" and change.kind == "removed":
            ident = f"choice_removed:{field_id}:{parts[5]}"
            reason = f"removes choice code '{parts[5]}' of field '{field_id}'"
    if reason is None:
        return change
    return Change(change.kind, change.path, change.old, change.new, change.description,
                  True, reason, ident)


def diff_protocols(old: Protocol, new: Protocol) -> list[Change]:
    """Return every change from ``old`` to ``new``; potentially breaking ones are flagged."""
    changes = _walk(to_canonical_dict(old), to_canonical_dict(new), "")
    return [_classify(change, old, new) for change in changes]


def check_amendment(
    old: Protocol,
    new: Protocol,
    *,
    fields_with_data: Collection[str],
    has_allocations: bool,
    accepted: Collection[str] = (),
) -> list[Change]:
    """Return the breaking changes of this amendment that the sponsor has not accepted.

    Breaking: removing a field that has data, changing the type of a field with data, removing
    a choice code of a field with data, changing the arms or the randomization model once a
    participant has been allocated, and changing a consent document's text (title, body,
    comprehension questions, signer) under the same version and language: a consent counts by
    (document, version), so its earlier signers would count as consented to a text they never
    read (give the changed text a new version). Each change's ``id`` may be listed in
    ``accepted``.
    """
    with_data = set(fields_with_data)
    old_fields = old.field_index()
    new_fields = new.field_index()
    found: list[Change] = []
    for field_id, (form, field) in old_fields.items():
        if field_id not in with_data:
            continue
        path = f"forms[{form.id}].fields[{field_id}]"
        if field_id not in new_fields:
            found.append(Change("removed", path, field.type, None, f"removed {path}", True,
                                f"removes field '{field_id}', which has data",
                                f"field_removed:{field_id}"))
            continue
        new_field = new_fields[field_id][1]
        if new_field.type != field.type:
            found.append(Change(
                "changed", f"{path}.type", field.type, new_field.type,
                f"{path}.type: {field.type} → {new_field.type}", True,
                f"changes the type of field '{field_id}' (which has data) from {field.type} "
                f"to {new_field.type}", f"field_type:{field_id}"))
        new_codes = {c.code for c in new_field.choices}
        for choice in field.choices:
            if choice.code not in new_codes:
                found.append(Change(
                    "removed", f"{path}.choices[{choice.code}]", choice.code, None,
                    f"removed {path}.choices[{choice.code}]", True,
                    f"removes choice code '{choice.code}' of field '{field_id}', which has data",
                    f"choice_removed:{field_id}:{choice.code}"))
    new_consents = {(d.id, d.version, d.language): d for d in new.consents}
    for document in old.consents:
        changed = new_consents.get((document.id, document.version, document.language))
        if changed is not None and changed != document:
            name = f"{document.id} v{document.version} ({document.language})"
            found.append(Change(
                "changed", f"consents[{document.id}]", None, None,
                f"consents[{document.id}] text changed", True,
                f"changes the text of consent {name} without a new version",
                f"consent_text:{document.id}:{document.version}:{document.language}"))
    if has_allocations:
        old_model, new_model = _allocation_model(old), _allocation_model(new)
        for key in ("arms", "randomization"):
            if old_model[key] != new_model[key]:
                found.append(Change(
                    "changed", key, old_model[key], new_model[key], f"{key} changed", True,
                    f"changes the {key} after the first allocation", key))
    accepted_ids = set(accepted)
    return [change for change in found if change.id not in accepted_ids]


def _without_wording(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_wording(v) for k, v in value.items()
                if k not in ("name", "description", "label")}
    if isinstance(value, list):
        return [_without_wording(v) for v in value]
    return value


def _allocation_model(protocol: Protocol) -> dict[str, Any]:
    """Return what allocations depend on: arms and randomization, without display wording."""
    data = to_canonical_dict(protocol)
    return {key: _without_wording(data[key]) for key in ("arms", "randomization")}
