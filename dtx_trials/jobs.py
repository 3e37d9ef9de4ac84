"""Background jobs: analysis runs go to RQ on Redis when `DTX_QUEUE_URL` is set; otherwise
they run in the requesting process before the 202 response is sent."""

from __future__ import annotations

from flask import Flask, current_app

from dtx_trials.extensions import db

QUEUE_NAME = "dtx"


def queue_url(app: Flask | None = None) -> str | None:
    return (app or current_app).config.get("QUEUE_URL")


def enqueue_analysis(run_id: int) -> str:
    """Start the run: on the queue (returns "queued") or in-process (returns its status)."""
    url = queue_url()
    if url:
        from redis import Redis
        from rq import Queue

        Queue(QUEUE_NAME, connection=Redis.from_url(url)).enqueue(
            run_analysis_job, run_id, job_timeout=3600, result_ttl=86400
        )
        return "queued"
    from dtx_trials.services.analyses import execute_analysis

    return execute_analysis(db.session, run_id).status


def run_analysis_job(run_id: int) -> str:
    """RQ entry point: build the app from the worker's environment and run one analysis."""
    from dtx_trials import create_app
    from dtx_trials.services.analyses import execute_analysis

    app = create_app()
    with app.app_context():
        try:
            return execute_analysis(db.session, run_id).status
        finally:
            db.session.remove()
            db.engine.dispose()  # each job builds its own app: close its connections
