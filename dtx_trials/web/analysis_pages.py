"""Statistician pages: request an analysis run (job progress), read its headline results and
key figures (Kaplan-Meier, forest plot, mean change), download the PDF and the exports.

Same services as the API: `analyses.request_analysis` / `get_run` / `list_runs` and
`exports.export_trial_files`; blinded statisticians only ever see blinded runs.
"""

from __future__ import annotations

import datetime
from typing import Any

from flask import Blueprint, g, redirect, render_template, request, url_for
from markupsafe import Markup
from werkzeug.wrappers import Response

from dtx_trials.extensions import db
from dtx_trials.jobs import enqueue_analysis
from dtx_trials.services import analyses, exports, protocols, randomization
from dtx_trials.services.access import can, sees_arms
from dtx_trials.services.errors import DomainError, NotFound
from dtx_trials.web import charts
from dtx_trials.web.trial_pages import _actor, _nav, _t, _trial, signed_in

bp = Blueprint("analysis_pages", __name__, template_folder="templates")


@bp.route("/trials/<code>/analyses", methods=["GET", "POST"])
@signed_in
def analyses_page(code: str) -> Response | str:
    """List runs; start one (cut-off date, unblinded for unblinded statisticians)."""
    trial = _trial(code)
    actor = _actor()
    error = None
    if request.method == "POST":
        try:
            cutoff = request.form.get("cutoff_on") or None
            run = analyses.request_analysis(
                db.session,
                actor,
                trial,
                unblinded=request.form.get("unblinded") == "1",
                review=request.form.get("review") or None,
                cutoff_on=datetime.date.fromisoformat(cutoff) if cutoff else None,
                language=request.form.get("language") or "en",
                paper=request.form.get("paper") or "letter",
            )
            enqueue_analysis(run.id)
            return redirect(url_for("analysis_pages.run_page", code=code, run_id=run.id))
        except (DomainError, ValueError) as exc:
            error = getattr(exc, "message", str(exc))
    runs = analyses.list_runs(db.session, actor, trial)
    blinded = protocols.blinded_roles(db.session, trial)
    return render_template(
        "analyses.html",
        runs=runs,
        error=error,
        may_unblind=bool(blinded) and sees_arms(actor, trial.id, blinded),
        may_compare=bool(
            actor.roles_in(trial.id) & protocols.comparative_review_roles(db.session, trial)
        ),
        may_export=can(actor, "export.run", trial.id),
        formats=exports.FORMATS,
        **_nav(trial),
    )


def endpoint_name(endpoint: dict[str, Any]) -> str:
    """The endpoint's name in the page language (the protocol's Chinese name when it has one)."""
    return str((g.get("lang") == "zh" and endpoint.get("name_zh")) or endpoint["name"])


def _figures(results: dict[str, Any]) -> list[Markup]:
    figures: list[Markup] = []
    for n, endpoint in enumerate(results.get("endpoints", [])):
        name = endpoint_name(endpoint)
        mean = endpoint.get("mean_by_visit") or []
        by_arm: dict[str, list[tuple[float, float]]] = {}
        for row in mean:
            by_arm.setdefault(str(row["arm"]), []).append(
                (float(row.get("day") or 0) / 7, float(row["mean"]))
            )
        if by_arm and max(len(v) for v in by_arm.values()) > 1:
            figures.append(
                charts.line_chart(
                    sorted(by_arm.items()),
                    f"{name}: {_t('mean_over_time')}",
                    _t("weeks"),
                    _t("mean"),
                    f"mean-{n}",
                )
            )
        curves = (endpoint.get("result") or {}).get("curves") or []
        if curves:
            figures.append(
                charts.line_chart(
                    [
                        (str(c["arm"]), list(zip(c["time"], c["survival"], strict=True)))
                        for c in curves
                    ],
                    f"{name}: Kaplan-Meier",
                    _t("days"),
                    _t("survival"),
                    f"km-{n}",
                    steps=True,
                )
            )
        rows = []
        for subgroup in endpoint.get("subgroups") or []:
            labels = subgroup.get("level_labels", {})
            for level in subgroup.get("levels", []):
                effect = (level.get("effects") or [{}])[0]
                if effect.get("ci_low") is not None and effect.get("ci_high") is not None:
                    rows.append(
                        (
                            f"{subgroup['label']}: {labels.get(level['level'], level['level'])}",
                            float(effect["estimate"]),
                            float(effect["ci_low"]),
                            float(effect["ci_high"]),
                        )
                    )
        if rows:
            null = 1.0 if endpoint.get("model") == "logistic" else 0.0
            figures.append(
                charts.forest_plot(rows, f"{name}: {_t('subgroups')}", null, f"forest-{n}")
            )
    return figures


@bp.get("/trials/<code>/analyses/<int:run_id>")
@signed_in
def run_page(code: str, run_id: int) -> str:
    """One run: status and progress, provenance, headline results and key figures."""
    trial = _trial(code)
    run = analyses.get_run(db.session, _actor(), trial, run_id)
    results = run.results or {}
    return render_template(
        "analysis_run.html",
        run=run,
        results=results,
        figures=_figures(results),
        endpoint_name=endpoint_name,
        **_nav(trial),
    )


@bp.get("/trials/<code>/analyses/<int:run_id>/report.pdf")
@signed_in
def report_pdf(code: str, run_id: int) -> Response:
    run = analyses.get_run(db.session, _actor(), _trial(code), run_id)
    if run.report_pdf is None:
        raise NotFound("no report for this run")
    response = Response(run.report_pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="{run.report_name}"'
    return response


@bp.get("/trials/<code>/downloads/<fmt>.zip")
@signed_in
def export_zip(code: str, fmt: str) -> Response:
    if fmt not in exports.FORMATS:
        raise NotFound("unknown export format")
    trial = _trial(code)
    files, blinded = exports.export_trial_files(db.session, _actor(), trial, [fmt])
    response = Response(exports.zip_files(files), mimetype="application/zip")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{code.lower()}-{fmt}-{"blinded" if blinded else "unblinded"}.zip"'
    )
    return response


SIMULATION_METRICS = (
    ("final |D|", "final_imbalance"),
    ("max |D| during enrolment", "max_imbalance"),
    ("stratum |D| mean", "stratum_imbalance_mean"),
    ("stratum |D| max", "stratum_imbalance_max"),
    ("marginal |D| mean", "marginal_imbalance_mean"),
    ("marginal |D| max", "marginal_imbalance_max"),
    ("exact balance during enrolment (EB)", "exact_balance"),
    ("P(final sizes within 1 of target)", "final_balance"),
    ("correct guesses", "correct_guess"),
    ("deterministic allocations", "deterministic_rate"),
)


@bp.get("/trials/<code>/randomization/simulation")
@signed_in
def simulation_page(code: str) -> str:
    """Sponsor admins compare the protocol's randomization design with the alternatives."""
    trial = _trial(code)
    error, comparisons = None, []
    try:
        n = int(request.args.get("n", 200))
        runs = int(request.args.get("runs", 50))
        comparisons = randomization.compare_designs(db.session, _actor(), trial, n=n, runs=runs)
    except ValueError:
        error = "n and runs must be whole numbers"
        n, runs = 200, 50
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        error = exc.message
    rows = [
        (title, [getattr(c.result, name) for c in comparisons])
        for title, name in SIMULATION_METRICS
    ]
    return render_template(
        "simulation.html",
        comparisons=comparisons,
        rows=rows,
        n=n,
        runs=runs,
        error=error,
        **_nav(trial),
    )
