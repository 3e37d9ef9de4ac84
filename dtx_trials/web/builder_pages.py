"""Trial set-up in the browser (sponsor admin): create a trial, build its protocol.

The builder's state is the protocol YAML itself, posted with every action: an action (add or
change a form, a field, a visit, an arm; remove one) parses the text, edits that one item with
``protocols.editing`` and writes the text back; nothing is stored until *Save*, which stores a
draft version through the same service as an upload (checked, audited). Every render validates
the text with the loader's messages and, when the trial has an active version, previews the
amendment's change list (``protocols.diff``). Expressions (branching, calculations) are tried
live against sample values on the form engine itself through a JSON endpoint.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, abort, g, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from dtx_trials.api.idempotency import idempotent
from dtx_trials.extensions import db
from dtx_trials.models import ProtocolVersion, Trial
from dtx_trials.models.users import Role
from dtx_trials.services import protocols, randomization, trials
from dtx_trials.services.access import can
from dtx_trials.services.errors import DomainError
from dtx_trials.web.trial_pages import _actor, _nav, _t, _trial, signed_in
from ecrf.expressions import ExpressionError, evaluate, parse
from ecrf.model import FIELD_TYPES, MISSING_CODES
from protocols import editing
from protocols import sections as builder_sections
from protocols.diff import diff_protocols
from protocols.loader import load_protocol_report
from protocols.model import BLINDING_LEVELS, PHASES, RANDOMIZATION_METHODS

bp = Blueprint("builder_pages", __name__, template_folder="templates")

RESPONDENTS = ("site", "participant", "outcome_assessor")
ANCHORS = ("screening", "enrollment", "randomization")
MAX_PROTOCOL_CHARS = 1_000_000


def may_create_trials() -> bool:
    actor = g.get("actor")
    return actor is not None and (
        actor.is_superuser or any(gr.role == Role.SPONSOR_ADMIN for gr in actor.grants)
    )


@bp.get("/trials/new")
@signed_in
def new_trial() -> tuple[str, int]:
    """The form that creates a trial (sponsor admins)."""
    if not may_create_trials():
        abort(403)
    return render_template("new_trial.html", errors={}, values={}), 200


@bp.post("/trials/new")
@signed_in
@idempotent
def create_trial() -> Response | tuple[str, int]:
    """Create a trial (its creator becomes its sponsor admin), then open its builder."""
    if not may_create_trials():
        abort(403)
    values = {k: request.form.get(k, "").strip() for k in ("code", "title")}
    try:
        trial = trials.create_trial(
            db.session, _actor(), code=values["code"], title=values["title"]
        )
    except DomainError as exc:
        errors = exc.errors or {"code": [exc.message]}
        return render_template("new_trial.html", errors=errors, values=values), exc.status
    return redirect(url_for("builder_pages.builder", code=trial.code))


def _latest_text(trial: Trial) -> str:
    version = db.session.scalars(
        select(ProtocolVersion)
        .where(ProtocolVersion.trial_id == trial.id)
        .order_by(ProtocolVersion.version_no.desc())
        .limit(1)
    ).first()
    if version is not None:
        return version.source_text
    return editing.dump(editing.skeleton(trial.code, {"en": trial.title}))


def _extra_languages(data: dict[str, Any]) -> list[str]:
    """The declared languages other than English and Simplified Chinese (their own inputs)."""
    declared = data.get("languages")
    if not isinstance(declared, list):
        return []
    return [str(lang) for lang in declared if lang not in ("en", "zh", "zh-Hans")]


def _label(prefix: str, extra: list[str] | None = None) -> dict[str, str] | None:
    label = {
        lang: request.form.get(f"{prefix}_{lang}", "").strip()
        for lang in ("en", "zh", *(extra or []))
        if request.form.get(f"{prefix}_{lang}", "").strip()
    }
    return label or None


def _number(name: str, errors: dict[str, list[str]], whole: bool = False) -> Any:
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw) if whole or raw.lstrip("-").isdigit() else float(raw)
    except ValueError:
        if whole:
            errors[name] = [_t("b_whole_number")]
            return None
        return raw  # an ISO date or time bound of a date-like field


def _text(name: str) -> str | None:
    return request.form.get(name, "").strip() or None


def _choices(errors: dict[str, list[str]]) -> list[dict[str, Any]] | None:
    """Choices typed one a line: ``code = English | 中文``."""
    out = []
    for number, line in enumerate(request.form.get("f_choices", "").splitlines(), start=1):
        if not line.strip():
            continue
        code, sep, labels = line.partition("=")
        if not sep or not code.strip():
            errors["f_choices"] = [_t("b_choice_line", n=number)]
            return None
        en, _, zh = labels.partition("|")
        label = {"en": en.strip()} | ({"zh": zh.strip()} if zh.strip() else {})
        out.append({"code": code.strip(), "label": label})
    return out or None


# the builder's list sections, in page order, with the document path their loader issues sit at
SECTION_PATHS = {
    "eligibility": "eligibility",
    "endpoints": "endpoints",
    "factors": "randomization.factors",
    "minimization": "randomization",
    "checks": "forms[",
    "consents": "consents",
    "streams": "device_streams",
}


def _section_labels() -> dict[str, str]:
    """The section inputs' labels, by input name (the same name means the same thing)."""
    return {
        "id": _t("bs_id"), "kind": _t("bs_kind"), "text": _t("bs_text"),
        "expression": _t("bs_expression"), "name": _t("bs_name"), "role": _t("bs_role"),
        "population": _t("bs_population"), "analysis_set": _t("bs_analysis_set"),
        "variable": _t("bs_variable"), "events": _t("bs_events"), "summary": _t("bs_summary"),
        "model": _t("bs_model"), "outcome_fields": _t("bs_outcome_fields"),
        "visits": _t("bs_visits"), "baseline_field": _t("bs_baseline_field"),
        "baseline_visit": _t("bs_baseline_visit"),
        "change_from_baseline": _t("bs_change_from_baseline"),
        "responder_if": _t("bs_responder_if"), "covariates": _t("bs_covariates"),
        "strata": _t("bs_strata"), "reference_arm": _t("bs_reference_arm"),
        "alpha": _t("bs_alpha"), "sidedness": _t("bs_sidedness"),
        "multiplicity_order": _t("bs_multiplicity_order"), "label": _t("bs_label"),
        "field": _t("bs_field"), "weight": _t("bs_weight"), "levels": _t("bs_levels"),
        "stratify_by_site": _t("bs_stratify_by_site"), "site_weight": _t("bs_site_weight"),
        "imbalance": _t("bs_imbalance"), "p": _t("bs_p"), "form": _t("bs_form"),
        "condition": _t("bs_condition"), "severity": _t("bs_severity"),
        "message": _t("bs_message"), "language": _t("bs_language"), "version": _t("version"),
        "signer": _t("bs_signer"), "title": _t("bs_title"), "body": _t("bs_body"),
        "unit": _t("b_unit"), "cadence": _t("bs_cadence"), "min": _t("b_min"),
        "max": _t("b_max"), "adherence_metric": _t("bs_adherence_metric"),
        "adherence_threshold": _t("bs_adherence_threshold"),
        "daily_minimum": _t("bs_daily_minimum"),
        "window_start_visit": _t("bs_window_start_visit"),
        "window_end_visit": _t("bs_window_end_visit"),
        "defines_per_protocol": _t("bs_defines_per_protocol"),
    }


def _section_titles() -> dict[str, tuple[str, str]]:
    """Each section's heading and its put button."""
    return {
        "eligibility": (_t("bs_eligibility"), _t("bs_put_eligibility")),
        "endpoints": (_t("bs_endpoints"), _t("bs_put_endpoints")),
        "factors": (_t("bs_factors"), _t("bs_put_factors")),
        "minimization": (_t("bs_minimization"), _t("bs_put_minimization")),
        "checks": (_t("bs_checks"), _t("bs_put_checks")),
        "consents": (_t("bs_consents"), _t("bs_put_consents")),
        "streams": (_t("bs_streams"), _t("bs_put_streams")),
    }


def _section(name: str) -> builder_sections.Section:
    section = builder_sections.SECTIONS.get(name)
    if section is None or name not in SECTION_PATHS:
        abort(400, description="unknown builder section")
    return section


def _posted_section(name: str) -> dict[str, str]:
    prefix = f"{name}."
    return {k[len(prefix):]: v for k, v in request.form.items() if k.startswith(prefix)}


def _filled(name: str, item: dict[str, Any]) -> dict[str, str]:
    """A section's inputs filled from one item, under their page names."""
    section = builder_sections.SECTIONS[name]
    return {f"{name}.{k}": v for k, v in builder_sections.to_inputs(section, item).items()}


def _apply_section(verb: str, target: str, data: dict[str, Any],
                   errors: dict[str, list[str]]) -> None:
    name, _, ref = target.partition(":")
    section = _section(name)
    if verb == "remove":
        builder_sections.remove_item(data, section, ref)
        return
    changes, problems = builder_sections.from_inputs(section, _posted_section(name))
    for input_name, messages in problems.items():
        errors[f"{name}.{input_name}"] = [
            _t("b_required") if m == "required" else m for m in messages
        ]
    if not errors:
        builder_sections.put_item(data, section, changes)


def _apply(action: str, data: dict[str, Any], errors: dict[str, list[str]]) -> None:
    """Apply one builder action to the document (errors name the inputs)."""
    verb, _, target = action.partition(":")
    extra = _extra_languages(data)
    if verb in ("put", "remove"):
        _apply_section(verb, target, data, errors)
    elif verb == "put_trial":
        blocks: list[int] | None = None
        raw_blocks = request.form.get("t_blocks", "").replace(" ", "")
        if raw_blocks:
            try:
                blocks = [int(b) for b in raw_blocks.split(",") if b]
            except ValueError:
                errors["t_blocks"] = [_t("b_whole_number")]
        languages = [
            lang.strip() for lang in request.form.get("t_languages", "").split(",") if lang.strip()
        ]
        values = {
            "languages": languages or None,
            "title": _label("t_title", extra + [x for x in languages if x not in extra]),
            "therapeutic_area": _text("t_area"),
            "phase": _text("t_phase"),
            "version": _text("t_version"),
            "blinding.level": _text("t_blinding"),
            "randomization.method": _text("t_method"),
            "randomization.block_sizes": blocks,
        }
        if not values["title"]:
            errors["t_title_en"] = [_t("b_required")]
        if not errors:
            editing.put_trial(data, values)
    elif verb == "put_form":
        form = {
            "id": _text("form_id"),
            "title": _label("form_title", extra),
            "respondent": _text("form_respondent"),
            "repeating": True if request.form.get("form_repeating") else None,
        }
        if not form["id"]:
            errors["form_id"] = [_t("b_required")]
        if not form["title"]:
            errors["form_title_en"] = [_t("b_required")]
        if not errors:
            editing.put_form(data, form)
    elif verb == "put_field":
        field = {
            "id": _text("f_id"),
            "type": _text("f_type"),
            "label": _label("f_label", extra),
            "required": True if request.form.get("f_required") else None,
            "unit": _text("f_unit"),
            "min": _number("f_min", errors),
            "max": _number("f_max", errors),
            "decimals": _number("f_decimals", errors, whole=True),
            "choices": _choices(errors),
            "show_if": _text("f_show_if"),
            "calculation": _text("f_calculation"),
            "allow_missing_codes": [c for c in MISSING_CODES if request.form.get(f"f_missing_{c}")]
            or None,
        }
        for name in ("f_id", "f_type", "f_label_en"):
            if not field[name[2:].removesuffix("_en")]:
                errors[name] = [_t("b_required")]
        form_id = _text("f_form")
        if not form_id:
            errors["f_form"] = [_t("b_required")]
        if not errors:
            editing.put_field(data, str(form_id), field)
    elif verb == "put_visit":
        forms = [f.strip() for f in request.form.get("v_forms", "").split(",") if f.strip()]
        visit = {
            "id": _text("v_id"),
            "label": _label("v_label", extra),
            "day": _number("v_day", errors, whole=True),
            "window_before": _number("v_before", errors, whole=True),
            "window_after": _number("v_after", errors, whole=True),
            "forms": forms or None,
            "anchor": _text("v_anchor"),
        }
        for name, key in (("v_id", "id"), ("v_label_en", "label"), ("v_day", "day")):
            if visit[key] is None and name not in errors:
                errors[name] = [_t("b_required")]
        if not errors:
            editing.put_visit(data, visit)
    elif verb == "put_arm":
        arm = {
            "code": _text("a_code"),
            "name": _label("a_name", extra),
            "ratio": _number("a_ratio", errors, whole=True),
            "is_control": True if request.form.get("a_control") else None,
        }
        for name, key in (("a_code", "code"), ("a_name_en", "name"), ("a_ratio", "ratio")):
            if arm[key] is None and name not in errors:
                errors[name] = [_t("b_required")]
        if not errors:
            editing.put_arm(data, arm)
    elif verb == "remove_field" and ":" in target:
        form_id, field_id = target.split(":", 1)
        editing.remove_field(data, form_id, field_id)
    elif verb == "remove_form":
        editing.remove_form(data, target)
    elif verb == "remove_visit":
        editing.remove_visit(data, target)
    elif verb == "remove_arm":
        editing.remove_arm(data, target)
    else:
        abort(400, description="unknown builder action")


def _trial_values(data: dict[str, Any]) -> dict[str, str]:
    """The identification inputs filled from the document (text as shown, never a default)."""

    def part(section: str, key: str) -> Any:
        value = data.get(section)
        return value.get(key) if isinstance(value, dict) else None

    title = data.get("title") if isinstance(data.get("title"), dict) else {}
    blocks = part("randomization", "block_sizes")
    return {
        "t_title_en": str(title.get("en") or ""),
        "t_title_zh": str(title.get("zh") or ""),
        "t_area": str(data.get("therapeutic_area") or ""),
        "t_phase": str(data.get("phase") or ""),
        "t_version": str(data.get("version") or ""),
        "t_blinding": str(part("blinding", "level") or ""),
        "t_method": str(part("randomization", "method") or ""),
        "t_blocks": ", ".join(map(str, blocks)) if isinstance(blocks, list) else "",
        "t_languages": ", ".join(map(str, data.get("languages") or [])),
        **{
            f"t_title_{lang}": str(title.get(lang) or "")
            for lang in _extra_languages(data)
        },
    }


def _render(
    trial: Trial,
    text: str,
    status: int = 200,
    errors: dict[str, list[str]] | None = None,
    filled: dict[str, str] | None = None,
    kept: list[str] | None = None,
    **extra: Any,
) -> tuple[str, int]:
    report = load_protocol_report(text, "protocol.yaml")
    try:
        data: dict[str, Any] | None = editing.parse(text)
    except editing.EditError:
        data = None
    changes = None
    if not report.errors and trial.active_protocol_version_id is not None:
        changes = diff_protocols(protocols.active_protocol(db.session, trial)[1], report.protocol)
    forms = [f for f in (data or {}).get("forms") or [] if isinstance(f, dict)]
    schedule = (data or {}).get("schedule")
    visits = schedule.get("visits") if isinstance(schedule, dict) else None
    arms = (data or {}).get("arms")
    trial_values = _trial_values(data or {})
    section_items = {
        name: list(builder_sections.items(data or {}, builder_sections.SECTIONS[name]))
        for name in SECTION_PATHS
    }
    minimization = next(iter(section_items["minimization"]), ("", {}))[1]
    posted = filled if filled is not None else (
        request.form if request.method == "POST" and errors else {}
    )
    posted = {"sim_n": "200", "sim_runs": "50", **posted}
    if "minimization.p" not in posted:  # the one mapping is always shown filled
        posted = {**_filled("minimization", minimization), **posted}
    base_languages = ["en", "zh", *_extra_languages(data or {})]
    label_languages = {
        f"{name}.{spec.name}": base_languages + sorted(
            {k.rsplit(".", 1)[1] for k in posted if k.startswith(f"{name}.{spec.name}.")}
            - set(base_languages)
        )
        for name in SECTION_PATHS
        for spec in builder_sections.SECTIONS[name].inputs
        if spec.kind in ("label", "longlabel")
    }
    return render_template(
        "builder.html",
        protocol_yaml=text,
        issues=[str(i) for i in report.issues],
        n_errors=len(report.errors),
        changes=changes,
        forms=forms,
        visits=[v for v in visits or [] if isinstance(v, dict)],
        arms=[a for a in arms or [] if isinstance(a, dict)] if isinstance(arms, list) else [],
        trial_values=trial_values,
        extra_languages=_extra_languages(data or {}),
        phases=PHASES,
        blinding_levels=BLINDING_LEVELS,
        methods=RANDOMIZATION_METHODS,
        field_types=FIELD_TYPES,
        missing_codes=MISSING_CODES,
        respondents=RESPONDENTS,
        anchors=ANCHORS,
        errors=errors or {},
        posted=posted,
        kept=kept or [],
        sections=[(n, builder_sections.SECTIONS[n]) for n in SECTION_PATHS],
        section_items=section_items,
        section_issues={
            name: [str(i) for i in report.issues if _issue_in(name, i.path)]
            for name in SECTION_PATHS
        },
        section_labels=_section_labels(),
        label_languages=label_languages,
        section_titles=_section_titles(),
        may_save=can(_actor(), "protocol.manage", trial.id),
        **_nav(trial),
        **extra,
    ), status


def _issue_in(name: str, path: str) -> bool:
    prefix = SECTION_PATHS[name]
    if name == "checks":
        return path.startswith("forms[") and ".checks[" in path
    if name == "minimization":
        return path.startswith("randomization.") and not path.startswith("randomization.factors")
    return path == prefix or path.startswith((f"{prefix}[", f"{prefix}."))


def _edit(trial: Trial, text: str, target: str) -> tuple[str, int]:
    """Show the document unchanged with one item's inputs filled (``edit:<section>:<ref>``);
    a value its input cannot show without loss is listed as kept as written."""
    name, _, ref = target.partition(":")
    section = _section(name)
    item = builder_sections.find_item(editing.parse(text), section, ref)
    if item is None:
        abort(404, description="no such item in the document")
    kept = builder_sections.kept_inputs(section, item)
    return _render(trial, text, filled=_filled(name, item), kept=kept, editing_section=name)


@bp.get("/trials/<code>/builder")
@signed_in
def builder(code: str) -> tuple[str, int]:
    """The protocol builder on the trial's latest version (or a new trial's skeleton)."""
    trial = _trial(code, "protocol.manage")
    return _render(trial, _latest_text(trial))


@bp.post("/trials/<code>/builder")
@signed_in
@idempotent
def builder_action(code: str) -> Response | tuple[str, int]:
    """Apply one builder action to the posted YAML, validate it, or save it as a draft version."""
    trial = _trial(code, "protocol.manage")
    text = request.form.get("protocol_text", "")
    if len(text) > MAX_PROTOCOL_CHARS:
        return _render(trial, "", 413, {"protocol_text": [_t("b_too_long")]})
    action = request.form.get("action", "validate")
    if action == "validate":
        return _render(trial, text)
    if action == "simulate":
        return _simulate(trial, text)
    if action == "save":
        try:
            version, created = protocols.upload_version(db.session, _actor(), trial, text)
        except DomainError as exc:
            return _render(trial, text, exc.status, banner=exc.message, banner_list=_flat(exc))
        key = "protocol_uploaded" if created else "protocol_same"
        return _render(trial, text, saved=version, protocol_done=_t(key, n=version.version_no))
    errors: dict[str, list[str]] = {}
    try:
        if action.startswith("edit:"):
            return _edit(trial, text, action[len("edit:"):])
        data = editing.parse(text)
        _apply(action, data, errors)
    except editing.EditError as exc:
        return _render(trial, text, 422, {"protocol_text": [str(exc)]})
    if errors:
        return _render(trial, text, 422, errors)
    return _render(trial, editing.dump(data))


def _simulate(trial: Trial, text: str) -> tuple[str, int]:
    """Run the randomization simulation on the draft's own design and its alternatives."""
    from dtx_trials.web.analysis_pages import SIMULATION_METRICS

    errors: dict[str, list[str]] = {}
    sizes = {name: _number(name, errors, whole=True) for name in ("sim_n", "sim_runs")}
    for name, value in sizes.items():
        if value is None and name not in errors:
            errors[name] = [_t("b_required")]
    report = load_protocol_report(text, "protocol.yaml")
    if report.errors:
        errors["sim"] = [_t("bs_sim_invalid")]
    if errors:
        return _render(trial, text, 422, errors)
    try:
        comparisons = randomization.compare_protocol_designs(
            report.protocol, n=sizes["sim_n"], runs=sizes["sim_runs"]
        )
    except DomainError as exc:
        return _render(trial, text, exc.status, {
            "sim_n": exc.errors.get("n", []), "sim_runs": exc.errors.get("runs", [])})
    rows = [
        (title, [getattr(c.result, name) for c in comparisons])
        for title, name in SIMULATION_METRICS
    ]
    return _render(trial, text, simulation=comparisons, simulation_rows=rows)


def _flat(exc: DomainError) -> list[str]:
    issues = exc.extra.get("issues", [])
    if issues:
        return [f"{i['line']}:{i['column']}: {i['path']}: {i['message']}" for i in issues]
    return [f"{k}: {'; '.join(map(str, v))}" for k, v in exc.errors.items()]


@bp.post("/trials/<code>/builder/preview")
@signed_in
def preview_expression(code: str) -> Response | tuple[Response, int]:
    """Evaluate a branching condition or calculation on sample values with the form engine.

    JSON in: ``{"expression": "...", "values": {"field": value}}``; out: ``{"value": ...,
    "fields": [...]}``, or 422 with ``errors.expression`` (the message and its column)."""
    _trial(code, "protocol.manage")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("expression"), str):
        return jsonify(errors={"expression": ["a text expression is required"]}), 422
    values = body.get("values", {})
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        return jsonify(errors={"values": ["an object of field values"]}), 422
    if len(body["expression"]) > 2000:
        return jsonify(errors={"expression": ["at most 2000 characters"]}), 422
    try:
        expression = parse(body["expression"])
        value = evaluate(expression, values)
    except ExpressionError as exc:
        return jsonify(errors={"expression": [str(exc)]}, position=exc.position), 422
    return jsonify(value=value, fields=sorted(expression.fields), text=json.dumps(value))
