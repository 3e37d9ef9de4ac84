"""Role pages of a trial: dashboard, participants, e-forms, queries, audit trail.

Views are thin: parse the form, call the same service function the API calls, render or
redirect. Permissions, site isolation and every business rule live in the services; a
`DomainError` becomes an inline message (422 next to the fields, 409 as a banner), while 403/404
fall through to the application's error page. Blinded pages never read `Allocation.arm_code`;
only the response to an emergency unblinding shows the arm, to the investigator who asked.
"""

from __future__ import annotations

import csv
import datetime
import functools
import io
import math
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC
from pathlib import Path
from typing import Any, TypeVar, cast

from flask import (
    Blueprint,
    abort,
    g,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from dtx_trials.api.context import account_policy
from dtx_trials.api.idempotency import idempotent
from dtx_trials.db import utcnow
from dtx_trials.extensions import db
from dtx_trials.models import (
    AuditEvent,
    Consent,
    DataQuery,
    FormRecord,
    Participant,
    ProtocolVersion,
    Signature,
    Site,
    Trial,
    User,
    Visit,
)
from dtx_trials.models.users import Role
from dtx_trials.services import (
    accounts,
    audit,
    coding,
    deviations,
    listing,
    participants,
    protocols,
    randomization,
    status_grid,
    trials,
)
from dtx_trials.services import dashboard as dashboard_service
from dtx_trials.services import forms as form_service
from dtx_trials.services.access import Actor, can, sees_arms
from dtx_trials.services.errors import Conflict, DomainError, NotFound, ValidationError
from dtx_trials.web import charts
from dtx_trials.web.i18n import translate, translate_message
from dtx_trials.web.pages import activation_link
from ecrf.model import UNSCHEDULED_VISIT, FormDef
from ecrf.render import form_to_json
from protocols.loader import load_protocol_report
from protocols.model import Protocol

ECRF_STATIC = str(Path(__file__).resolve().parents[2] / "ecrf" / "static")
AUDIT_PAGE_SIZE = 50
MESSAGES_AFTER_REDIRECT = frozenset({"saved", "password_changed", "invited"})
UNBLIND_CATEGORIES = ("serious_adverse_event", "medical_emergency", "regulatory", "other")
SIGNER_ROLES = ("participant", "guardian", "legally_authorized_representative", "witness")

bp = Blueprint("trial_pages", __name__, template_folder="templates")

F = TypeVar("F", bound=Callable[..., Any])


def signed_in(view: F) -> F:
    """Send anonymous visitors to the sign-in page."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.get("actor") is None:
            return redirect(url_for("pages.login"))
        return view(*args, **kwargs)

    return cast(F, wrapper)


def _actor() -> Actor:
    return cast(Actor, g.actor)


def _t(key: str, **values: object) -> str:
    return translate(key, g.get("lang", "en"), **values)


def _trial(code: str, action: str = "trial.read") -> Trial:
    return trials.get_trial(db.session, _actor(), code, action)


def _nav(trial: Trial) -> dict[str, Any]:
    actor = _actor()
    return {
        "trial": trial,
        "roles": sorted(actor.roles_in(trial.id)),
        "may": {
            action: can(actor, action, trial.id)
            for action in (
                "participant.read",
                "participant.write",
                "form.read",
                "audit.read",
                "protocol.manage",
                "analysis.run",
                "coding.read",
            )
        },
    }


@bp.get("/static/ecrf/expressions.js")
def expressions_js() -> Response:
    """Serve the browser implementation of the expression language (live branching)."""
    return send_from_directory(ECRF_STATIC, "expressions.js", mimetype="text/javascript")


# ------------------------------------------------------------------------------ dashboard


DASHBOARD_TABS = ("overview", "adherence", "setup", "accounts")
DASHBOARD_TABLES = (
    "enrollment",
    "sites",
    "screen_failures",
    "queries_by_age",
    "records",
    "visits",
    "deviations",
    "progress",
    "epro",
    "entry_lag",
    "adherence",
)


def _sees_figures(actor: Actor, trial: Trial) -> bool:
    """Operational figures: sponsor, monitor and data-management roles (site staff have their
    participant list; nobody sees a figure broken down by arm)."""
    return can(actor, "participant.read", trial.id) and (
        can(actor, "trial.manage", trial.id)
        or can(actor, "form.verify", trial.id)
        or can(actor, "form.lock", trial.id)
    )


def _figure_tables(
    figures: dashboard_service.TrialFigures,
) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """Each chart's numbers as (column headings, rows): shown under the chart and as CSV."""
    p = figures.projection
    cumulative: list[list[Any]] = []
    running = 0
    for day, n in sorted(Counter(figures.enrolled_on).items()):
        running += n
        cumulative.append([day.isoformat(), n, running])
    adherence_rows = [
        [
            s.stream,
            w.week,
            w.n_participants,
            w.n_adherent,
            None if w.percent_adherent is None else round(w.percent_adherent, 1),
            w.mean_value,
        ]
        for s in figures.adherence
        for w in s.weeks
    ]
    return {
        "enrollment": (
            [_t("date"), _t("n_enrolled_that_day"), _t("n_enrolled_cumulative")],
            cumulative,
        ),
        "sites": (
            [_t("site"), _t("n_enrolled"), _t("target_n"), _t("percent_of_target")],
            [
                [c, n, figures.site_targets.get(c), _percent(n, figures.site_targets.get(c, 0))]
                for c, n in figures.enrolled_by_site
            ],
        ),
        "screen_failures": (
            [_t("criterion"), _t("criterion_text"), _t("n_participants")],
            [[cid or _t("not_determined"), text, n] for cid, text, n in figures.screen_failures],
        ),
        "queries_by_age": (
            [_t("age_days"), _t("n_open_queries")],
            [[label, n] for label, n in figures.queries_by_age],
        ),
        "records": (
            [_t("status"), _t("n_records")],
            [[status, n] for status, n in figures.records_by_status]
            + [[_t("signed_records"), figures.n_signatures]],
        ),
        "visits": (
            [_t("visit_outcome"), _t("n_visits")],
            [[_t("vo_" + outcome), n] for outcome, n in figures.visit_compliance],
        ),
        "deviations": (
            [_t("deviation_kind"), _t("status"), _t("n_deviations")],
            [[_t("dk_" + kind), _t("st_" + status), n] for kind, status, n in figures.deviations],
        ),
        "progress": (
            [_t("progress_item"), _t("n_done"), _t("n_of"), _t("percent_done")],
            [
                [label, done, of, round(100 * done / of, 1) if of else None]
                for label, done, of in (
                    (_t("sdv_progress"), figures.n_verified, figures.n_records_to_sign),
                    (_t("signature_progress"), figures.n_signatures, figures.n_records_to_sign),
                )
            ],
        ),
        "epro": (
            [_t("epro_outcome"), _t("n_questionnaires"), _t("percent_of_due")],
            [
                [_t("eo_" + outcome), n, _percent(n, sum(m for _, m in figures.epro_compliance))]
                for outcome, n in figures.epro_compliance
            ],
        ),
        "entry_lag": (
            [_t("lag_days"), _t("n_records")],
            [[label, n] for label, n in figures.entry_lag] if any(
                n for _, n in figures.entry_lag) else [],
        ),
        "adherence": (
            [
                _t("stream"),
                _t("week"),
                _t("n_participants"),
                _t("n_adherent"),
                _t("percent_adherent"),
                _t("mean_metric"),
            ],
            adherence_rows,
        ),
        "projection": (
            [_t("target_n"), _t("n_enrolled"), _t("rate_per_week"), _t("projected_on")],
            [[p.target, p.enrolled, p.rate_per_week, p.projected_on]],
        ),
    }


def _percent(n: int, of: int) -> float | None:
    return round(100 * n / of, 1) if of else None


def _figure_charts(figures: dashboard_service.TrialFigures, today: datetime.date) -> dict[str, Any]:
    p = figures.projection
    charts_: dict[str, Any] = {
        "enrollment": charts.enrollment_over_time(
            figures.enrolled_on,
            _t("enrollment_over_time"),
            today=today,
            target=p.target,
            projected_on=p.projected_on,
            names=(_t("n_enrolled"), _t("target_n"), _t("projection")),
        ),
        "sites": charts.enrollment_by_site(figures.enrolled_by_site, _t("enrollment_by_site")),
        "screen_failures": charts.bar_chart(
            [(cid or _t("not_determined"), float(n)) for cid, _, n in figures.screen_failures],
            _t("screen_failures_by_reason"),
            "chart-screen-failures",
        ),
        "queries_by_age": charts.bar_chart(
            [(label, float(n)) for label, n in figures.queries_by_age],
            _t("open_queries_by_age"),
            "chart-queries-age",
        ),
        "records": charts.bar_chart(
            [
                (_t("st_" + s) if s in RECORD_STATUS_KEYS else s, float(n))
                for s, n in figures.records_by_status
            ],
            _t("forms_by_status"),
            "chart-records",
        ),
    }
    charts_["visits"] = charts.bar_chart(
        [(_t("vo_" + outcome), float(n)) for outcome, n in figures.visit_compliance],
        _t("visit_compliance"),
        "chart-visits",
    )
    by_kind: Counter[str] = Counter()
    for kind, _status, n in figures.deviations:
        by_kind[kind] += n
    charts_["deviations"] = charts.bar_chart(
        [(_t("dk_" + kind), float(n)) for kind, n in sorted(by_kind.items())],
        _t("deviations_by_kind"),
        "chart-deviations",
    )
    total = figures.n_records_to_sign
    charts_["progress"] = charts.bar_chart(
        [
            (_t("sdv_progress"), 100 * figures.n_verified / total if total else 0.0),
            (_t("signature_progress"), 100 * figures.n_signatures / total if total else 0.0),
        ],
        _t("sdv_and_signatures"),
        "chart-progress",
        unit="%",
    )
    charts_["epro"] = charts.bar_chart(
        [(_t("eo_" + outcome), float(n)) for outcome, n in figures.epro_compliance],
        _t("epro_compliance"),
        "chart-epro",
        label_width=130,
    )
    charts_["entry_lag"] = charts.bar_chart(
        [(label, float(n)) for label, n in figures.entry_lag],
        _t("data_entry_lag"),
        "chart-entry-lag",
    )
    if figures.adherence:
        charts_["adherence"] = charts.line_chart(
            [
                (
                    s.label,
                    [(float(w.week), w.percent_adherent or 0.0) for w in s.weeks],
                )
                for s in figures.adherence
                if s.weeks
            ],
            _t("adherence_by_week"),
            _t("week_since_randomization"),
            _t("percent_adherent"),
            "chart-adherence",
        )
    return charts_


RECORD_STATUS_KEYS = frozenset({"draft", "submitted", "verified", "signed", "frozen", "locked"})


def _dashboard_tab(extra: dict[str, Any]) -> str:
    if any(k in extra for k in ("protocol_issues", "protocol_ok", "protocol_done", "site_errors")):
        return "setup"
    if any(k in extra for k in ("account_errors", "grant_errors", "invite_errors")):
        return "accounts"
    return request.args.get("tab") or "overview"


def _render_dashboard(trial: Trial, status: int = 200, **extra: Any) -> tuple[str, int]:
    actor = _actor()
    tab = _dashboard_tab(extra)
    context: dict[str, Any] = {**_nav(trial), "message": request.args.get("msg"), "tab": tab}
    if context["message"] not in MESSAGES_AFTER_REDIRECT:
        context["message"] = None
    context["sites"] = trials.list_sites(db.session, actor, trial)
    if trial.active_protocol_version_id is not None:
        context["title"] = protocols.active_protocol(db.session, trial)[1].title.get(
            g.get("lang", "en")
        )
    sees_figures = _sees_figures(actor, trial)
    tabs = ["overview"]
    if sees_figures:
        tabs.append("adherence")
    if can(actor, "protocol.manage", trial.id) or can(actor, "membership.manage", trial.id):
        tabs.append("setup")
    if can(actor, "membership.manage", trial.id):
        tabs.append("accounts")
    context["tabs"] = tabs
    if tab not in tabs:
        abort(404)
    if sees_figures and tab in ("overview", "adherence"):
        site_code = request.args.get("site", "").strip() or None
        today = utcnow().date()
        figures = dashboard_service.trial_figures(
            db.session,
            actor,
            trial,
            site_code=site_code,
            lang=g.get("lang", "en"),
            today=today,
            with_adherence=tab == "adherence",
        )
        context.update(
            figures=figures,
            n_enrolled=figures.projection.enrolled,
            figure_tables=_figure_tables(figures),
            figure_charts=_figure_charts(figures, today),
            site_code=site_code,
        )
    if tab == "setup" and can(actor, "protocol.manage", trial.id):
        context["versions"] = protocols.list_versions(db.session, actor, trial)
    if can(actor, "membership.manage", trial.id):
        context["may_add_site"] = True
    if tab == "accounts" and can(actor, "membership.manage", trial.id):
        memberships = trials.list_memberships(db.session, actor, trial)
        users = {
            u.id: u
            for u in db.session.scalars(
                select(User).where(User.id.in_({m.user_id for m in memberships}))
            )
        }
        site_codes = {s.id: s.code for s in context["sites"]}
        context["memberships"] = [
            (m, users.get(m.user_id), site_codes.get(m.site_id) if m.site_id else None)
            for m in memberships
        ]
        context["role_names"] = [r.value for r in Role if r != Role.PARTICIPANT]
    context.update(extra)
    return render_template("dashboard.html", **context), status


def _dashboard_table(
    code: str, table: str, tables: Iterable[str]
) -> tuple[Trial, str | None, dashboard_service.TrialFigures, list[str], list[list[Any]]]:
    """The figures behind one chart or table, with the page's roles, sites and site filter."""
    trial = _trial(code)
    actor = _actor()
    if table not in tables:
        abort(404)
    if not _sees_figures(actor, trial):
        abort(403)
    site_code = request.args.get("site", "").strip() or None
    figures = dashboard_service.trial_figures(
        db.session,
        actor,
        trial,
        site_code=site_code,
        lang=g.get("lang", "en"),
        with_adherence=table == "adherence",
    )
    headings, rows = _figure_tables(figures)[table]
    return trial, site_code, figures, headings, rows


def _download(trial: Trial, table: str, site_code: str | None, suffix: str) -> str:
    name = f"{trial.code}-{table}" + (f"-{site_code}" if site_code else "") + suffix
    return f'attachment; filename="{name}"'


@bp.get("/trials/<code>/dashboard/<table>.csv")
@signed_in
def dashboard_csv(code: str, table: str) -> Response:
    """One dashboard chart's numbers as CSV (same roles, sites and filter as the page)."""
    trial, site_code, _, headings, rows = _dashboard_table(
        code, table, (*DASHBOARD_TABLES, "projection")
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(headings)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return Response(
        "\ufeff" + buffer.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": _download(trial, table, site_code, ".csv")},
    )


#: dashboard chart -> its title's key (the charts that have a PNG download)
CHART_TITLES = {
    "enrollment": "enrollment_over_time",
    "sites": "enrollment_by_site",
    "screen_failures": "screen_failures_by_reason",
    "queries_by_age": "open_queries_by_age",
    "records": "forms_by_status",
    "visits": "visit_compliance",
    "deviations": "deviations_by_kind",
    "progress": "sdv_and_signatures",
    "epro": "epro_compliance",
    "entry_lag": "data_entry_lag",
    "adherence": "adherence_by_week",
}
# bars: (label columns, value column, target column)
BAR_COLUMNS: dict[str, tuple[tuple[int, ...], int, int | None]] = {
    "sites": ((0,), 1, 2),
    "screen_failures": ((0,), 2, None),
    "queries_by_age": ((0,), 1, None),
    "records": ((0,), 1, None),
    "visits": ((0,), 1, None),
    "deviations": ((0, 1), 2, None),
    "progress": ((0,), 3, None),
    "epro": ((0,), 1, None),
    "entry_lag": ((0,), 1, None),
}


def _chart_png(
    table: str,
    headings: list[str],
    rows: list[list[Any]],
    figures: dashboard_service.TrialFigures,
) -> bytes:
    """Draw one dashboard chart as PNG from its CSV table (``web.chart_png``)."""
    from dtx_trials.web import chart_png  # matplotlib loads on the first image, not at start

    lang = g.get("lang", "en")
    title = _t(CHART_TITLES[table])
    if table == "enrollment":
        p = figures.projection
        return chart_png.enrollment_png(
            rows, title=title, target=p.target, projected_on=p.projected_on,
            today=utcnow().date(), names=(_t("n_enrolled"), _t("target_n"), _t("projection")),
            x_label=headings[0], lang=lang,
        )
    if table == "adherence":
        return chart_png.lines_png(
            rows, title=title, series_column=0, x_column=1, y_column=4,
            x_label=_t("week_since_randomization"), y_label=headings[4], lang=lang,
        )
    labels, value, target = BAR_COLUMNS[table]
    return chart_png.bar_png(
        rows, title=title, label_column=labels, value_column=value, value_label=headings[value],
        category_label=" / ".join(headings[i] for i in labels), lang=lang,
        target_column=target, target_label=headings[target] if target is not None else "",
    )


@bp.get("/trials/<code>/dashboard/<table>.png")
@signed_in
def dashboard_png(code: str, table: str) -> Response:
    """One dashboard chart as a PNG image, drawn from the numbers of its CSV (same roles, sites
    and filter; pooled over arms like every dashboard figure)."""
    trial, site_code, figures, headings, rows = _dashboard_table(code, table, CHART_TITLES)
    return Response(
        _chart_png(table, headings, rows, figures),
        mimetype="image/png",
        headers={"Content-Disposition": _download(trial, table, site_code, ".png")},
    )


@bp.get("/trials/<code>")
@signed_in
def dashboard(code: str) -> tuple[str, int]:
    """The trial's front page in tabs (overview with key figures and charts, adherence,
    set-up, accounts); each role sees its own tabs."""
    return _render_dashboard(_trial(code))


@bp.post("/trials/<code>/protocol")
@signed_in
@idempotent
def upload_protocol(code: str) -> Response | tuple[str, int]:
    """Validate a protocol document, or store it as a new draft version (sponsor)."""
    trial = _trial(code, "protocol.manage")
    upload = request.files.get("protocol_file")
    text, name = request.form.get("protocol_text", ""), "protocol.yaml"
    if upload is not None and upload.filename:
        name = upload.filename
        try:
            text = upload.read().decode("utf-8")
        except UnicodeDecodeError:
            return _render_dashboard(
                trial, 422, protocol_issues=[f"{name}: the file is not UTF-8 text"]
            )
    if request.form.get("action") == "validate":
        result = load_protocol_report(text, name)
        issues = [str(i) for i in result.issues]
        return _render_dashboard(
            trial,
            200 if not result.errors else 422,
            protocol_issues=issues,
            protocol_ok=not result.errors,
            protocol_text=text,
        )
    try:
        version, created = protocols.upload_version(db.session, _actor(), trial, text, name)
    except DomainError as exc:
        issues = (
            [
                f"{i['file']}:{i['line']}:{i['column']}: {i['path']}: {i['message']}"
                for i in exc.extra.get("issues", [])
            ]
            or [f"{k}: {'; '.join(map(str, v))}" for k, v in exc.errors.items()]
            or [exc.message]
        )
        return _render_dashboard(trial, exc.status, protocol_issues=issues, protocol_text=text)
    key = "protocol_uploaded" if created else "protocol_same"
    return _render_dashboard(trial, protocol_done=_t(key, n=version.version_no))


@bp.post("/trials/<code>/protocol/<int:version_no>/activate")
@signed_in
@idempotent
def activate_protocol(code: str, version_no: int) -> Response | tuple[str, int]:
    """Activate a protocol version; breaking changes must be accepted by id (sponsor)."""
    trial = _trial(code, "protocol.manage")
    accepted = [a.strip() for a in request.form.get("accepted", "").split(",") if a.strip()]
    try:
        protocols.activate_version(db.session, _actor(), trial, version_no, accepted)
    except DomainError as exc:
        return _render_dashboard(trial, exc.status, banner=exc.message, banner_list=_flat(exc))
    return redirect(url_for("trial_pages.dashboard", code=code, msg="saved", tab="setup"))


@bp.get("/trials/<code>/protocol/diff")
@signed_in
def protocol_diff(code: str) -> tuple[str, int]:
    """The readable change list between two protocol versions (sponsor)."""
    trial = _trial(code, "protocol.manage")
    try:
        old, new = int(request.args.get("old", "")), int(request.args.get("new", ""))
    except ValueError:
        abort(404)
    changes = protocols.diff_versions(db.session, _actor(), trial, old, new)
    return render_template("diff.html", changes=changes, old=old, new=new, **_nav(trial)), 200


@bp.post("/trials/<code>/sites")
@signed_in
@idempotent
def add_site(code: str) -> Response | tuple[str, int]:
    """Add a site to the trial (sponsor)."""
    trial = _trial(code, "site.manage")
    data = {k: request.form.get(k, "").strip() or None for k in ("code", "name_zh", "country")}
    data["name"] = request.form.get("name", "").strip()
    data["timezone"] = request.form.get("timezone", "").strip() or "UTC"
    try:
        trials.create_site(db.session, _actor(), trial, data)
    except DomainError as exc:
        return _render_dashboard(trial, exc.status, site_errors=exc.errors, banner=exc.message)
    return redirect(url_for("trial_pages.dashboard", code=code, msg="saved", tab="setup"))


@bp.post("/trials/<code>/accounts")
@signed_in
@idempotent
def create_account(code: str) -> Response | tuple[str, int]:
    """Create an account (sponsor admin); give it a role here with the grant form."""
    trial = _trial(code, "user.manage")
    try:
        accounts.create_user(
            db.session,
            _actor(),
            username=request.form.get("username", ""),
            printed_name=request.form.get("printed_name", ""),
            email=request.form.get("email", "").strip() or None,
            policy=account_policy(),
            activation_link=activation_link,
        )
    except DomainError as exc:
        return _render_dashboard(trial, exc.status, account_errors=exc.errors, banner=exc.message)
    return redirect(url_for("trial_pages.dashboard", code=code, msg="saved", tab="accounts"))


@bp.post("/trials/<code>/invitations")
@signed_in
@idempotent
def invite_staff(code: str) -> Response | tuple[str, int]:
    """Invite a member of staff by e-mail: a new account with its role (and site) in this trial;
    the invitee chooses a password with the one-time link (sponsor admin)."""
    trial = _trial(code, "membership.manage")
    try:
        site_code = request.form.get("site", "")
        try:
            site = trials.get_site(db.session, _actor(), trial, site_code) if site_code else None
        except NotFound:
            raise ValidationError("unknown site", {"site": ["not a site of this trial"]}) from None
        accounts.invite_staff(
            db.session,
            _actor(),
            trial_id=trial.id,
            username=request.form.get("username", ""),
            printed_name=request.form.get("printed_name", ""),
            email=request.form.get("email", "").strip() or None,
            role=request.form.get("role", ""),
            site_id=site.id if site is not None else None,
            policy=account_policy(),
            activation_link=activation_link,
        )
    except DomainError as exc:
        return _render_dashboard(trial, _inline(exc), invite_errors=exc.errors,
                                 banner=exc.message)
    return redirect(url_for("trial_pages.dashboard", code=code, msg="invited", tab="accounts"))


@bp.post("/trials/<code>/memberships")
@signed_in
@idempotent
def grant_membership(code: str) -> Response | tuple[str, int]:
    """Grant a user a role in the trial, at a site for site-bound roles (sponsor)."""
    trial = _trial(code, "membership.manage")
    username = request.form.get("username", "").strip().lower()
    user_id = db.session.scalar(select(User.id).where(User.username == username))
    try:
        if user_id is None:
            raise NotFound("user not found", {"username": ["no such user"]})
        site_code = request.form.get("site", "")
        site_id = trials.get_site(db.session, _actor(), trial, site_code).id if site_code else None
        accounts.grant_role(
            db.session,
            _actor(),
            trial_id=trial.id,
            user_id=user_id,
            role=request.form.get("role", ""),
            site_id=site_id,
        )
    except DomainError as exc:
        return _render_dashboard(trial, _inline(exc), grant_errors=exc.errors, banner=exc.message)
    return redirect(url_for("trial_pages.dashboard", code=code, msg="saved", tab="accounts"))


@bp.post("/trials/<code>/memberships/<int:membership_id>/approve")
@signed_in
@idempotent
def approve_membership(code: str, membership_id: int) -> Response | tuple[str, int]:
    """Approve a grant waiting under the two-person rule (a second sponsor admin)."""
    trial = _trial(code, "membership.manage")
    try:
        accounts.approve_grant(db.session, _actor(), trial_id=trial.id, membership_id=membership_id)
    except DomainError as exc:
        return _render_dashboard(trial, exc.status, banner=exc.message)
    return redirect(url_for("trial_pages.dashboard", code=code, msg="saved", tab="accounts"))


@bp.post("/trials/<code>/memberships/<int:membership_id>/revoke")
@signed_in
@idempotent
def revoke_membership(code: str, membership_id: int) -> Response:
    """Revoke a role (kept in the trail, marked inactive)."""
    trial = _trial(code, "membership.manage")
    accounts.revoke_role(db.session, _actor(), trial_id=trial.id, membership_id=membership_id)
    return redirect(url_for("trial_pages.dashboard", code=code, msg="saved", tab="accounts"))


def _inline(exc: DomainError) -> int:
    """Show a mistyped user or site next to its field (422); other 404s stay 404 (isolation)."""
    if isinstance(exc, NotFound) and not exc.errors:
        raise exc
    return 422 if isinstance(exc, NotFound) else exc.status


def _flat(exc: DomainError) -> list[str]:
    return [f"{k}: {m}" for k, messages in exc.errors.items() for m in _as_list(messages)]


def _as_list(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [f"{k}: {m}" for k, v in value.items() for m in _as_list(v)]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


# ------------------------------------------------------------------------------ participants


def _list_args() -> dict[str, Any]:
    """The list arguments of the query string (validated by the listing service)."""
    page, per_page = listing.page_args(request.args)
    return {
        "search": request.args.get("q", "").strip() or None,
        "site_code": request.args.get("site", "").strip() or None,
        "status": request.args.get("status", "").strip() or None,
        "sort": request.args.get("sort", "").strip() or None,
        "descending": request.args.get("dir") == "desc",
        "page": page,
        "per_page": per_page,
    }


# the query arguments a page link keeps (never url_for's own: code, page, _external, ...)
LIST_ARGS = frozenset({"q", "site", "status", "sort", "dir", "per_page", "age", "record"})
AUDIT_ARGS = frozenset({"entity_type", "action", "actor", "since", "until", "per_page"})


def _page_links(endpoint: str, code: str, result: listing.Page[Any]) -> dict[str, str | None]:
    """URLs of the first, previous, next and last pages, keeping the filters."""
    kept = {k: v for k, v in request.args.items() if k in LIST_ARGS and v}

    def at(number: int) -> str:
        return url_for(endpoint, code=code, **kept, page=number)

    return {
        "first": at(1) if result.page > 1 else None,
        "prev": at(result.page - 1) if result.page > 1 else None,
        "next": at(result.page + 1) if result.page < result.pages else None,
        "last": at(result.pages) if result.page < result.pages else None,
    }


def _render_participants(trial: Trial, status: int = 200, **extra: Any) -> tuple[str, int]:
    actor = _actor()
    sites = trials.list_sites(db.session, actor, trial)
    list_errors: dict[str, Any] = {}
    try:
        args = _list_args()
        result = listing.participants_page(db.session, actor, trial, **args)
    except ValidationError as exc:
        list_errors = exc.errors
        status = max(status, 422)
        result = listing.participants_page(db.session, actor, trial)
        args = {"search": None, "site_code": None, "status": None, "sort": None}
    labels: dict[str, str] = {}
    if trial.active_protocol_version_id is not None:
        schedule = protocols.active_protocol(db.session, trial)[1].schedule
        labels = {v.id: v.label.get(g.get("lang", "en")) for v in schedule.visits}
    screen_sites = [
        s for s in sites if s.is_active and can(actor, "participant.write", trial.id, s.id)
    ]
    return render_template(
        "participants.html",
        result=result,
        args=args,
        list_errors=list_errors,
        links=_page_links("trial_pages.participant_list", trial.code, result),
        statuses=listing.PARTICIPANT_STATUSES,
        sorts=tuple(listing.PARTICIPANT_SORTS),
        site_choices=[s.code for s in sites],
        screen_sites=screen_sites,
        visit_labels=labels,
        **_nav(trial),
        **extra,
    ), status


@bp.get("/trials/<code>/participants")
@signed_in
def participant_list(code: str) -> tuple[str, int]:
    """Participants at my sites, a page at a time: search by subject code, filter by site and
    status, sort; status and the next visit due (overdue highlighted)."""
    return _render_participants(_trial(code))


@bp.get("/trials/<code>/records")
@signed_in
def record_grid(code: str) -> tuple[str, int]:
    """The record-status grid: my sites' participants × scheduled visits × forms, each cell's
    status in words (colour repeats it), a page at a time with search and filters."""
    trial = _trial(code, "form.read")
    actor = _actor()
    lang = g.get("lang", "en")
    if trial.active_protocol_version_id is None:
        abort(404)
    protocol = protocols.active_protocol(db.session, trial)[1]
    status = 200
    list_errors: dict[str, Any] = {}
    page, per_page = 1, listing.DEFAULT_PER_PAGE
    args: dict[str, Any] = {}
    try:
        page, per_page = listing.page_args(request.args)
        args = {
            "search": request.args.get("q", "").strip() or None,
            "site_code": request.args.get("site", "").strip() or None,
            "status": request.args.get("status", "").strip() or None,
            "record_status": request.args.get("record", "").strip() or None,
        }
        columns, result = status_grid.status_grid_page(
            db.session, actor, trial, protocol, page=page, per_page=per_page, **args
        )
    except ValidationError as exc:
        list_errors, status, args = exc.errors, 422, {}
        columns, result = status_grid.status_grid_page(db.session, actor, trial, protocol)
    visit_labels = {v.id: v.label.get(lang) for v in protocol.schedule.visits}
    form_titles = {f.id: f.title.get(lang) for f in protocol.forms}
    visit_spans: list[tuple[str, int]] = []
    for column in columns:
        if visit_spans and visit_spans[-1][0] == column.visit_code:
            visit_spans[-1] = (column.visit_code, visit_spans[-1][1] + 1)
        else:
            visit_spans.append((column.visit_code, 1))
    sites = trials.list_sites(db.session, actor, trial)
    return render_template(
        "records.html",
        columns=columns,
        result=result,
        args=args,
        list_errors=list_errors,
        links=_page_links("trial_pages.record_grid", trial.code, result),
        statuses=listing.PARTICIPANT_STATUSES,
        cell_statuses=status_grid.CELL_STATUSES,
        site_choices=[s.code for s in sites],
        visit_labels=visit_labels,
        visit_spans=visit_spans,
        form_titles=form_titles,
        **_nav(trial),
    ), status


@bp.post("/trials/<code>/participants")
@signed_in
@idempotent
def screen(code: str) -> Response | tuple[str, int]:
    """Screen a new participant at one of my sites."""
    trial = _trial(code)
    identifiers = {k: request.form.get(k, "").strip() or None for k in ("full_name", "phone")}
    try:
        participant = participants.screen_participant(
            db.session, _actor(), trial, request.form.get("site", ""), identifiers
        )
    except DomainError as exc:
        return _render_participants(trial, _inline(exc), errors=exc.errors, banner=exc.message)
    return redirect(
        url_for("trial_pages.participant_page", code=code, subject=participant.subject_code)
    )


def _render_participant(
    trial: Trial, subject: str, status: int = 200, **extra: Any
) -> tuple[str, int]:
    actor = _actor()
    participant = participants.get_participant(db.session, actor, trial, subject)
    protocol = participants.protocol_for(db.session, participant)
    site = db.session.get(Site, participant.site_id)
    allocation = None
    knows_arms = sees_arms(actor, trial.id, protocols.blinded_roles(db.session, trial))
    if participant.randomized_at is not None:
        receipt = randomization.get_allocation(db.session, actor, trial, subject)
        # the page receives the receipt fields only, never the allocation row; the arm only
        # where the protocol does not blind any of the reader's roles (open label, or site
        # staff of an assessor-blinded trial)
        allocation = {
            "randomization_number": receipt.randomization_number,
            "activation_code": receipt.activation_code,
            "allocated_at": receipt.allocated_at,
            "arm": protocol.arm(receipt.arm_code).name.get(g.get("lang", "en"))
            if knows_arms
            else None,
        }
    may = {
        action: can(actor, action, trial.id, participant.site_id)
        for action in (
            "participant.write",
            "randomize",
            "unblind.emergency",
            "form.read",
            "form.write",
        )
    }
    context: dict[str, Any] = {
        **_nav(trial),
        "participant": participant,
        "site": site,
        "allocation": allocation,
        "knows_arms": knows_arms,
        "can": may,
        "request_id": uuid.uuid4().hex,
        "categories": UNBLIND_CATEGORIES,
        "signer_roles": SIGNER_ROLES,
        "site_zone": deviations.site_zone(site),
        "version_labels": _version_labels(trial),
        "amendment_pending": participants.waiting_for(db.session, participant),
    }
    if may["form.read"]:
        context.update(_schedule_context(participant, protocol))
        context["earlier_records"] = [
            (record, visit_code)
            for record, visit_code in db.session.execute(
                select(FormRecord, Visit.visit_code)
                .join(Visit, Visit.id == FormRecord.visit_id)
                .where(
                    FormRecord.participant_id == participant.id,
                    FormRecord.protocol_version_id.is_not(None),
                    FormRecord.protocol_version_id != participant.protocol_version_id,
                )
                .order_by(FormRecord.id)
            )
        ]
    if may["participant.write"]:
        context["consents"] = list(
            db.session.scalars(
                select(Consent).where(Consent.participant_id == participant.id).order_by(Consent.id)
            )
        )
        # consent documents always follow the trial's current version (re-consent)
        current = participants.current_protocol(db.session, participant)
        context["missing_consents"] = participants.missing_consents(
            db.session, participant, current
        )
        context["consent_documents"] = current.consents
    context.update(extra)
    return render_template("participant.html", **context), status


def _schedule_context(participant: Participant, protocol: Protocol) -> dict[str, Any]:
    lang = g.get("lang", "en")
    visits = {
        v.visit_code: v
        for v in db.session.scalars(select(Visit).where(Visit.participant_id == participant.id))
    }
    records = list(
        db.session.scalars(
            select(FormRecord)
            .where(FormRecord.participant_id == participant.id)
            .order_by(FormRecord.id)
        )
    )
    by_key = {(r.visit_id, r.form_code, r.repeat_index): r for r in records}
    # the schedule's visits (dated on this page), then the unscheduled visit where the
    # protocol has forms for it (`schedule.unscheduled_forms`; it takes no date)
    rows = [(v.id, v.label.get(lang), v.forms, True) for v in protocol.schedule.visits]
    if protocol.schedule.unscheduled_forms:
        rows.append((UNSCHEDULED_VISIT, _t("unscheduled_visit"),
                     protocol.schedule.unscheduled_forms, False))
    schedule = []
    for visit_code, label, form_ids, dated in rows:
        visit = visits.get(visit_code)
        schedule.append(
            {
                "id": visit_code,
                "label": label,
                "visit": visit,
                "dated": dated,
                "forms": [
                    (
                        form_id,
                        protocol.form(form_id).title.get(lang),
                        by_key.get((visit.id if visit else None, form_id, 1)),
                    )
                    for form_id in form_ids
                ],
            }
        )
    logs = []
    for form in protocol.forms:
        if not form.repeating:
            continue
        entries = [r for r in records if r.form_code == form.id]
        logs.append(
            {
                "id": form.id,
                "title": form.title.get(lang),
                "entries": entries,
                "visit_codes": {
                    r.id: next(
                        (c for c, v in visits.items() if v.id == r.visit_id), UNSCHEDULED_VISIT
                    )
                    for r in entries
                },
                "next_index": max((r.repeat_index for r in entries), default=0) + 1,
            }
        )
    return {"schedule": schedule, "logs": logs, "log_visit": UNSCHEDULED_VISIT}


@bp.get("/trials/<code>/participants/<subject>")
@signed_in
def participant_page(code: str, subject: str) -> tuple[str, int]:
    """One participant: consent, eligibility, enrollment, randomization receipt, visits."""
    return _render_participant(_trial(code), subject)


def _participant_action(
    code: str, subject: str, call: Callable[[Trial], Any]
) -> Response | tuple[str, int]:
    trial = _trial(code)
    try:
        call(trial)
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        return _render_participant(
            trial,
            subject,
            exc.status,
            banner=exc.message,
            errors=exc.errors,
            banner_list=_flat(exc),
        )
    return redirect(url_for("trial_pages.participant_page", code=code, subject=subject))


@bp.post("/trials/<code>/participants/<subject>/consent")
@signed_in
@idempotent
def record_consent(code: str, subject: str) -> Response | tuple[str, int]:
    """Record a signed consent document version."""
    document_id, _, rest = request.form.get("document", "").partition("|")
    version, _, language = rest.partition("|")
    return _participant_action(
        code,
        subject,
        lambda trial: participants.record_consent(
            db.session,
            _actor(),
            trial,
            subject,
            document_id=document_id,
            version=version,
            language=language or "en",
            signer_role=request.form.get("signer_role", "participant"),
            signer_name=request.form.get("signer_name", "").strip() or None,
            signer_phone=request.form.get("signer_phone", "").strip() or None,
        ),
    )


@bp.post("/trials/<code>/participants/<subject>/econsent")
@signed_in
@idempotent
def send_econsent(code: str, subject: str) -> tuple[str, int]:
    """Send the signer a remote eConsent link; the page shows the link once."""
    from dtx_trials.services import econsent

    trial = _trial(code)
    document_id, _, rest = request.form.get("document", "").partition("|")
    version, _, language = rest.partition("|")
    base = request.host_url.rstrip("/") + "/econsent"
    try:
        issued = econsent.issue_invitation(
            db.session,
            _actor(),
            trial,
            subject,
            document_id=document_id,
            version=version,
            language=language,
            channel=request.form.get("channel", ""),
            address=request.form.get("address", "").strip() or None,
            link_base=base,
        )
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        return _render_participant(
            trial, subject, exc.status, banner=exc.message, banner_list=_flat(exc)
        )
    return _render_participant(trial, subject, 200, econsent_url=f"{base}/{issued.token}")


@bp.post("/trials/<code>/participants/<subject>/visits/<visit>/date")
@signed_in
@idempotent
def record_visit_date(code: str, subject: str, visit: str) -> Response | tuple[str, int]:
    """Record when a visit took place (the site's local date and time)."""
    errors: dict[str, list[str]] = {}
    try:
        on = datetime.date.fromisoformat(request.form.get("date", ""))
    except ValueError:
        errors["date"] = ["a date YYYY-MM-DD"]
    at: datetime.time | None = None
    if request.form.get("time", "").strip():
        try:
            at = datetime.time.fromisoformat(request.form["time"].strip())
        except ValueError:
            errors["time"] = ["a time HH:MM"]
    if errors:
        return _render_participant(
            _trial(code),
            subject,
            422,
            banner="invalid visit date",
            errors=errors,
            banner_list=[f"{k}: {m}" for k, v in errors.items() for m in v],
        )
    return _participant_action(
        code,
        subject,
        lambda trial: participants.record_visit_date(
            db.session,
            _actor(),
            trial,
            subject,
            visit,
            on,
            time=at,
            reason=request.form.get("reason", "").strip() or None,
        ),
    )


@bp.get("/trials/<code>/deviations")
@signed_in
def deviation_list(code: str) -> tuple[str, int]:
    """Protocol deviations at the sites I may read; the monitor reviews them here."""
    trial = _trial(code)
    return _render_deviations(trial)


def _render_deviations(trial: Trial, status: int = 200, **extra: Any) -> tuple[str, int]:
    actor = _actor()
    wanted = request.args.get("status") or None
    if wanted not in (None, *deviations.STATUSES):
        wanted = None
    rows = deviations.list_deviations(db.session, actor, trial, status=wanted)
    items = [
        {
            "deviation": d,
            "subject": p.subject_code,
            "visit_code": v.visit_code if v else None,
            "may_review": d.status == "open"
            and can(actor, "deviation.review", trial.id, d.site_id),
        }
        for d, p, v in rows
    ]
    return render_template(
        "deviations.html", items=items, wanted=wanted, **_nav(trial), **extra
    ), status


@bp.post("/trials/<code>/deviations/<int:deviation_id>/review")
@signed_in
@idempotent
def review_deviation(code: str, deviation_id: int) -> Response | tuple[str, int]:
    """The monitor marks a deviation reviewed, with a note."""
    trial = _trial(code)
    try:
        deviations.review_deviation(
            db.session, _actor(), trial, deviation_id, request.form.get("note", "")
        )
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        return _render_deviations(trial, exc.status, banner=exc.message, errors=exc.errors)
    return redirect(url_for("trial_pages.deviation_list", code=code))


@bp.get("/trials/<code>/coding")
@signed_in
def coding_page(code: str) -> tuple[str, int]:
    """The data manager's coding queue: uncoded AE terms and medications, coded against the
    sponsor's dictionary."""
    return _render_coding(_trial(code))


def _render_coding(trial: Trial, status: int = 200, **extra: Any) -> tuple[str, int]:
    actor = _actor()
    items = coding.coding_queue(db.session, actor, trial)
    terms = coding.dictionary_terms(db.session, actor, trial)
    return render_template(
        "coding.html", items=items, terms=terms,
        may_code=can(actor, "coding.code", trial.id), **_nav(trial), **extra,
    ), status


@bp.post("/trials/<code>/coding")
@signed_in
@idempotent
def code_term(code: str) -> Response | tuple[str, int]:
    """Code one verbatim term (data manager); audited."""
    trial = _trial(code)
    try:
        coding.code_term(
            db.session, _actor(), trial, kind=request.form.get("kind", ""),
            verbatim=request.form.get("verbatim", ""),
            dictionary_term=request.form.get("dictionary_term", ""),
        )
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        return _render_coding(trial, exc.status, banner=exc.message, errors=exc.errors)
    return redirect(url_for("trial_pages.coding_page", code=code))


@bp.post("/trials/<code>/coding/auto")
@signed_in
@idempotent
def auto_code(code: str) -> Response:
    """Code every exact match (data manager)."""
    trial = _trial(code)
    coding.auto_code(db.session, _actor(), trial)
    return redirect(url_for("trial_pages.coding_page", code=code))


@bp.post("/trials/<code>/participants/<subject>/eligibility")
@signed_in
def check_eligibility(code: str, subject: str) -> Response | tuple[str, int]:
    """Assess eligibility and show the failed criteria by id and text."""
    trial = _trial(code)
    try:
        result = participants.assess_eligibility(db.session, _actor(), trial, subject)
    except Conflict as exc:
        return _render_participant(trial, subject, exc.status, banner=exc.message)
    return _render_participant(trial, subject, eligibility=result)


@bp.post("/trials/<code>/participants/<subject>/enroll")
@signed_in
@idempotent
def enroll(code: str, subject: str) -> Response | tuple[str, int]:
    """Enroll an eligible, consented participant."""
    return _participant_action(
        code,
        subject,
        lambda trial: participants.enroll_participant(db.session, _actor(), trial, subject),
    )


@bp.post("/trials/<code>/participants/<subject>/randomize")
@signed_in
@idempotent
def randomize(code: str, subject: str) -> Response | tuple[str, int]:
    """Randomize; the page then shows the randomization number and activation code only."""
    request_id = request.form.get("request_id") or None
    return _participant_action(
        code,
        subject,
        lambda trial: randomization.randomize_participant(
            db.session, _actor(), trial, subject, request_id=request_id
        ),
    )


@bp.post("/trials/<code>/participants/<subject>/unblind")
@signed_in
@idempotent
def unblind(code: str, subject: str) -> tuple[str, int]:
    """Emergency unblinding: the arm appears in this response only, to this investigator."""
    trial = _trial(code)
    category = request.form.get("category", "")
    try:
        if category not in UNBLIND_CATEGORIES:
            raise ValidationError("unknown category", {"category": list(UNBLIND_CATEGORIES)})
        result = randomization.emergency_unblind(
            db.session,
            _actor(),
            trial,
            subject,
            password=request.form.get("password", ""),
            reason=request.form.get("reason", ""),
            category=category,
        )
    except DomainError as exc:
        # a refused password is shown in the dialog; a role without the right gets the 403 page
        if exc.status == 404 or (
            exc.status == 403 and not can(_actor(), "unblind.emergency", trial.id)
        ):
            raise
        return _render_participant(
            trial,
            subject,
            422 if exc.status == 403 else exc.status,
            unblind_error=exc.message,
            errors=exc.errors,
        )
    participant = participants.get_participant(db.session, _actor(), trial, subject)
    protocol = participants.protocol_for(db.session, participant)
    arm_name = protocol.arm(result.arm_code).name.get(g.get("lang", "en"))
    return render_template(
        "unblinded.html", subject=subject, result=result, arm_name=arm_name, **_nav(trial)
    ), 200


# ------------------------------------------------------------------------------ e-forms


def _form_values(form: FormDef) -> dict[str, object]:
    """Read one form's fields from the posted HTML form (hidden fields are simply absent)."""
    values: dict[str, object] = {}
    for field in form.fields:
        if field.type in ("calculated", "descriptive", "file", "signature"):
            continue
        missing = request.form.get(f"{field.id}__missing", "")
        if missing:
            values[field.id] = {"missing": missing}
        elif field.type == "multiple_choice":
            values[field.id] = request.form.getlist(field.id)
        elif field.id in request.form:
            values[field.id] = request.form[field.id]
    return values


def _version_labels(trial: Trial) -> dict[int, str]:
    """Protocol version id -> "v2 (1.1)": the number and the document's own label."""
    return {
        v.id: f"v{v.version_no} ({v.content.get('version', '')})"
        for v in db.session.scalars(
            select(ProtocolVersion).where(ProtocolVersion.trial_id == trial.id)
        )
    }


def _stored_record(
    participant: Participant, visit: Visit | None, form_code: str, repeat: int
) -> FormRecord | None:
    if visit is None:
        return None
    return db.session.scalars(
        select(FormRecord).where(
            FormRecord.participant_id == participant.id,
            FormRecord.visit_id == visit.id,
            FormRecord.form_code == form_code,
            FormRecord.repeat_index == repeat,
        )
    ).first()


def _render_form(
    trial: Trial,
    subject: str,
    visit_code: str,
    form_code: str,
    repeat: int,
    status: int = 200,
    **extra: Any,
) -> tuple[str, int]:
    actor = _actor()
    participant = participants.get_participant(db.session, actor, trial, subject, "form.read")
    lang = g.get("lang", "en")
    visit = db.session.scalars(
        select(Visit).where(Visit.participant_id == participant.id, Visit.visit_code == visit_code)
    ).first()
    record = _stored_record(participant, visit, form_code, repeat)
    protocol = participants.form_protocol(db.session, participant, visit_code, form_code, record)
    try:
        form = protocol.form(form_code)
    except KeyError as exc:
        raise NotFound(f"form {form_code} is not part of the protocol") from exc
    signatures: list[Signature] = []
    queries: list[DataQuery] = []
    if record is not None:
        signatures = list(
            db.session.scalars(select(Signature).where(Signature.form_record_id == record.id))
        )
        queries = list(
            db.session.scalars(select(DataQuery).where(DataQuery.form_record_id == record.id))
        )
    try:
        visit_label = protocol.visit(visit_code).label.get(lang)
    except KeyError:
        visit_label = visit_code
    site_id = participant.site_id
    context: dict[str, Any] = {
        **_nav(trial),
        "participant": participant,
        "form": form_to_json(form, lang),
        "form_code": form.id,
        "visit_code": visit_code,
        "visit_label": visit_label,
        "repeat": repeat,
        "record": record,
        "values": extra.pop("values", None) or (record.data if record else {}),
        "signatures": signatures,
        "record_sha256": form_service.content_sha256(record) if record is not None else "",
        "version_labels": _version_labels(trial),
        "queries": queries,
        "field_errors": {},
        "today": datetime.date.today().isoformat(),
        "now": utcnow().strftime("%Y-%m-%d %H:%M"),
        "can": {
            action: can(actor, action, trial.id, site_id)
            for action in (
                "form.write",
                "form.sign",
                "form.verify",
                "form.lock",
                "query.raise",
                "query.answer",
                "query.close",
            )
        },
        "meanings": form_service.SIGNATURE_MEANINGS,
        "message": request.args.get("msg") if request.args.get("msg") == "saved" else None,
    }
    context.update(extra)
    if lang != "en":
        checks = [*form.checks, *(c for f in form.fields for c in f.checks)]
        known = {c.message.en: c.message.get(lang) for c in checks}

        def say(text: str) -> str:
            return translate_message(text, lang, known)

        context["field_errors"] = {
            k: [say(m) for m in messages] for k, messages in context["field_errors"].items()
        }
        if context.get("banner"):
            context["banner"] = say(context["banner"])
    return render_template("form.html", **context), status


def _form_url(code: str, subject: str, visit_code: str, form_code: str, repeat: int) -> str:
    return url_for(
        "trial_pages.form_page",
        code=code,
        subject=subject,
        visit=visit_code,
        form=form_code,
        repeat=repeat if repeat != 1 else None,
        msg="saved",
    )


def _repeat() -> int:
    try:
        repeat = int(request.values.get("repeat", "1"))
    except ValueError:
        abort(404)
    if not 1 <= repeat <= 10000:
        abort(404)
    return repeat


@bp.get("/trials/<code>/participants/<subject>/visits/<visit>/forms/<form>")
@signed_in
def form_page(code: str, subject: str, visit: str, form: str) -> tuple[str, int]:
    """An e-form rendered from the protocol, with live branching in the browser."""
    return _render_form(_trial(code), subject, visit, form, _repeat())


@bp.post("/trials/<code>/participants/<subject>/visits/<visit>/forms/<form>")
@signed_in
@idempotent
def save_form(code: str, subject: str, visit: str, form: str) -> Response | tuple[str, int]:
    """Save a draft or submit; edit-check errors come back next to their fields."""
    trial = _trial(code)
    repeat = _repeat()
    participant = participants.get_participant(db.session, _actor(), trial, subject, "form.read")
    stored_visit = db.session.scalars(
        select(Visit).where(Visit.participant_id == participant.id, Visit.visit_code == visit)
    ).first()
    stored = _stored_record(participant, stored_visit, form, repeat)
    protocol = participants.form_protocol(db.session, participant, visit, form, stored)
    try:
        form_def = protocol.form(form)
    except KeyError as exc:
        raise NotFound(f"form {form} is not part of the protocol") from exc
    values = _form_values(form_def)
    try:
        expected = (
            int(request.form.get("expected_version", ""))
            if request.form.get("expected_version")
            else None
        )
    except ValueError:
        expected = None
    try:
        form_service.save_form(
            db.session,
            _actor(),
            trial,
            subject,
            visit,
            form,
            values,
            submit=request.form.get("action") == "submit",
            expected_version=expected,
            reason=request.form.get("reason") or None,
            acknowledged=request.form.getlist("acknowledged"),
            repeat_index=repeat,
        )
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        field_errors = exc.errors.get("values", {}) if isinstance(exc.errors, dict) else {}
        field_ids = {f.id for f in form_def.fields}
        other = [
            f"{k}: {m}"
            for k, msgs in field_errors.items()
            if k not in field_ids
            for m in _as_list(msgs)
        ] + [
            m
            for k, msgs in exc.errors.items()
            if k not in ("values", "reason")
            for m in _as_list(msgs)
        ]
        return _render_form(
            trial,
            subject,
            visit,
            form,
            repeat,
            exc.status,
            values=_raw_values(form_def),
            field_errors={k: _as_list(v) for k, v in field_errors.items() if k in field_ids},
            reason_errors=_as_list(exc.errors.get("reason", [])),
            warnings=exc.extra.get("warnings", []),
            banner=exc.message,
            banner_list=other,
            reason=request.form.get("reason", ""),
        )
    return redirect(_form_url(code, subject, visit, form, repeat))


def _raw_values(form: FormDef) -> dict[str, object]:
    """The posted values as typed, to show them again next to their errors."""
    values: dict[str, object] = {}
    for field in form.fields:
        if field.type == "multiple_choice":
            values[field.id] = request.form.getlist(field.id)
        elif request.form.get(f"{field.id}__missing"):
            values[field.id] = {"missing": request.form[f"{field.id}__missing"]}
        elif field.id in request.form:
            values[field.id] = request.form[field.id]
    return values


def _record_action(
    code: str, record_id: int, call: Callable[[Trial], Any], **on_error: Any
) -> Response | tuple[str, int]:
    trial = _trial(code)
    record, participant = form_service.get_record(db.session, _actor(), trial, record_id)
    visit = db.session.get(Visit, record.visit_id) if record.visit_id else None
    visit_code = visit.visit_code if visit else UNSCHEDULED_VISIT
    try:
        call(trial)
    except DomainError as exc:
        reauth_action = on_error.get("reauth_action")
        refused_password = (
            exc.status == 403
            and reauth_action
            and can(_actor(), reauth_action, trial.id, participant.site_id)
        )
        if exc.status == 404 or (exc.status == 403 and not refused_password):
            raise
        return _render_form(
            trial,
            participant.subject_code,
            visit_code,
            record.form_code,
            record.repeat_index,
            422 if refused_password else exc.status,
            banner=exc.message,
            banner_list=_flat(exc),
        )
    return redirect(
        _form_url(code, participant.subject_code, visit_code, record.form_code, record.repeat_index)
    )


def _posted_int(name: str) -> int:
    """A whole number posted by a page's hidden field (-1 when absent or garbled: stale)."""
    text = request.form.get(name, "")
    return int(text) if text.isdigit() and len(text) < 10 else -1


@bp.post("/trials/<code>/records/<int:record_id>/sign")
@signed_in
@idempotent
def sign(code: str, record_id: int) -> Response | tuple[str, int]:
    """E-sign a submitted record: password re-entered, meaning chosen."""
    return _record_action(
        code,
        record_id,
        lambda trial: form_service.sign_form(
            db.session,
            _actor(),
            trial,
            record_id,
            password=request.form.get("password", ""),
            expected_version=_posted_int("expected_version"),
            content_sha256_seen=request.form.get("content_sha256") or None,
            meaning=request.form.get("meaning", "responsibility"),
        ),
        reauth_action="form.sign",
    )


@bp.post("/trials/<code>/records/<int:record_id>/status")
@signed_in
@idempotent
def record_status(code: str, record_id: int) -> Response | tuple[str, int]:
    """Source-data verify (monitor), freeze or lock (data manager)."""
    target = request.form.get("target", "")
    if target not in ("verified", "frozen", "locked"):
        abort(400, description="unknown target status")
    return _record_action(
        code,
        record_id,
        lambda trial: form_service.set_record_status(
            db.session, _actor(), trial, record_id, target
        ),
    )


@bp.post("/trials/<code>/records/<int:record_id>/queries")
@signed_in
@idempotent
def raise_query(code: str, record_id: int) -> Response | tuple[str, int]:
    """Raise a query on a field (monitor, data manager)."""
    return _record_action(
        code,
        record_id,
        lambda trial: form_service.raise_query(
            db.session,
            _actor(),
            trial,
            record_id,
            request.form.get("field", ""),
            request.form.get("text", ""),
        ),
    )


# ------------------------------------------------------------------------------ queries


def _render_queries(trial: Trial, status: int = 200, **extra: Any) -> tuple[str, int]:
    actor = _actor()
    list_errors: dict[str, Any] = {}
    try:
        args = _list_args()
        args["age"] = request.args.get("age", "").strip() or None
        result = listing.queries_page(db.session, actor, trial, **args)
    except ValidationError as exc:
        list_errors = exc.errors
        status = max(status, 422)
        result = listing.queries_page(db.session, actor, trial)
        args = {"search": None, "site_code": None, "status": None, "sort": None, "age": None}
    items = [
        {
            "query": row.query,
            "record": row.record,
            "participant": row.participant,
            "site_code": row.site_code,
            "age_days": row.age_days,
            "visit_code": row.visit_code or UNSCHEDULED_VISIT,
            "may_answer": can(actor, "query.answer", trial.id, row.participant.site_id),
            "may_close": can(actor, "query.close", trial.id, row.participant.site_id),
        }
        for row in result.items
    ]
    sites = trials.list_sites(db.session, actor, trial)
    return render_template(
        "queries.html",
        items=items,
        result=result,
        args=args,
        wanted=args.get("status"),
        list_errors=list_errors,
        links=_page_links("trial_pages.query_inbox", trial.code, result),
        age_buckets=[b[0] for b in listing.AGE_BUCKETS],
        sorts=tuple(listing.QUERY_SORTS),
        site_choices=[s.code for s in sites],
        **_nav(trial),
        **extra,
    ), status


@bp.get("/trials/<code>/queries")
@signed_in
def query_inbox(code: str) -> tuple[str, int]:
    """The query inbox for the sites I may see, with an answer box or close/reopen buttons."""
    return _render_queries(_trial(code))


@bp.post("/trials/<code>/queries/<int:query_id>/<verb>")
@signed_in
@idempotent
def query_action(code: str, query_id: int, verb: str) -> Response | tuple[str, int]:
    """Answer (site staff), close or reopen (monitor, data manager) a query."""
    trial = _trial(code)
    actor = _actor()
    note = request.form.get("note", "").strip() or None
    try:
        if verb == "answer":
            form_service.answer_query(
                db.session, actor, trial, query_id, request.form.get("answer", "")
            )
        elif verb in ("close", "reopen"):
            form_service.close_query(
                db.session, actor, trial, query_id, reopen=verb == "reopen", note=note
            )
        else:
            abort(404)
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        return _render_queries(trial, exc.status, banner=exc.message, errors={query_id: _flat(exc)})
    return redirect(url_for("trial_pages.query_inbox", code=code))


# ------------------------------------------------------------------------------ audit


def _date_arg(name: str) -> datetime.datetime | None:
    text = request.args.get(name, "").strip()
    if not text:
        return None
    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"invalid {name}", {name: ["a date, YYYY-MM-DD"]}) from None
    return datetime.datetime(day.year, day.month, day.day, tzinfo=UTC)


@bp.get("/trials/<code>/audit")
@signed_in
def audit_trail(code: str) -> tuple[str, int]:
    """Browse the trial's audit trail with filters (entity type, action, actor, dates) and
    pages; verify its integrity (auditor). Bad filters answer 422 with the first page."""
    trial = _trial(code, "audit.read")
    chain = AuditEvent.chain == audit.chain_for(trial.id)
    unfiltered = select(AuditEvent).where(chain)
    stmt = unfiltered
    filters = {k: request.args.get(k, "").strip() for k in ("entity_type", "action", "actor")}
    list_errors: dict[str, Any] = {}
    status = 200
    try:
        for name in ("entity_type", "action"):
            if filters[name]:
                stmt = stmt.where(getattr(AuditEvent, name) == filters[name])
        if filters["actor"].isdigit():
            stmt = stmt.where(AuditEvent.actor_id == int(filters["actor"]))
        elif filters["actor"]:
            pattern = listing.like_pattern(filters["actor"].lower())
            stmt = stmt.where(func.lower(AuditEvent.actor_name).like(pattern, escape="\\"))
        since, until = _date_arg("since"), _date_arg("until")
        if since:
            stmt = stmt.where(AuditEvent.at >= since)
        if until:
            stmt = stmt.where(AuditEvent.at < until + datetime.timedelta(days=1))
        page, per_page = listing.page_args(request.args)
    except ValidationError as exc:
        list_errors, status = exc.errors, 422
        stmt = unfiltered
        page, per_page = 1, AUDIT_PAGE_SIZE
    if "per_page" not in request.args:
        per_page = AUDIT_PAGE_SIZE
    total = (
        audit.n_events(db.session, audit.chain_for(trial.id))
        if stmt is unfiltered
        else db.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    )
    pages = max(1, math.ceil(total / per_page))
    page = min(page, pages)
    events = list(
        db.session.scalars(
            stmt.order_by(AuditEvent.seq).offset((page - 1) * per_page).limit(per_page)
        )
    )
    # the filter values: an index skip scan, one seek per distinct value
    entity_types, actions = audit.filter_choices(db.session, audit.chain_for(trial.id))
    choices = {"entity_type": entity_types, "action": actions}
    report = audit.verify(db.session, trial.id) if request.args.get("verify") else None
    base_args = {k: v for k, v in request.args.items() if k in AUDIT_ARGS and v}
    return render_template(
        "audit.html",
        events=events,
        filters=filters,
        since=request.args.get("since", ""),
        until=request.args.get("until", ""),
        choices=choices,
        total=total,
        page=page,
        pages=pages,
        base_args=base_args,
        report=report,
        list_errors=list_errors,
        **_nav(trial),
    ), status
