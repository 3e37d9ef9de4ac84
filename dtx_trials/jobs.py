"""Background jobs: analysis runs and notification deliveries go to RQ on Redis when
`DTX_QUEUE_URL` is set; otherwise they run in the requesting process (an analysis before the
202 response is sent, notifications right after the commit that enqueued them)."""

from __future__ import annotations

import logging

from flask import Flask, current_app, has_app_context
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from dtx_trials.extensions import db

log = logging.getLogger(__name__)

def queue_url(app: Flask | None = None) -> str | None:
    return (app or current_app).config.get("QUEUE_URL")


def queue_name(app: Flask | None = None) -> str:
    """The RQ queue (``DTX_QUEUE_NAME``, default ``dtx``) the app enqueues to, its worker reads."""
    return str((app or current_app).config.get("QUEUE_NAME") or "dtx")


def enqueue_analysis(run_id: int) -> str:
    """Start the run: on the queue (returns "queued") or in-process (returns its status)."""
    url = queue_url()
    if url:
        from redis import Redis
        from rq import Queue

        Queue(queue_name(), connection=Redis.from_url(url)).enqueue(
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


def dispatch_notifications() -> None:
    """Start delivering the outbox after a commit that enqueued notifications.

    With a queue, an RQ job delivers them (`dtx worker`, which also runs the retries it
    schedules); without one, they are delivered here, in-process, through the channels the
    configuration enables. Delivery problems never reach the request that caused the message:
    the rows stay pending and are retried (`dtx notifications deliver` sends them too).
    """
    if not has_app_context():
        return
    app = current_app
    url = queue_url(app)
    if url:
        from redis import Redis
        from redis.exceptions import RedisError
        from rq import Queue

        try:
            Queue(queue_name(app), connection=Redis.from_url(url)).enqueue(
                deliver_notifications_job, job_timeout=600, result_ttl=3600
            )
        except RedisError as exc:
            log.warning("notification delivery not queued (%s); rows stay pending", exc)
        return
    from dtx_trials.channels import channels_from_config
    from dtx_trials.services.notifications import deliver_pending

    channels = channels_from_config(app.config)
    if not channels:
        return
    session = Session(db.engine)
    try:
        deliver_pending(session, channels)
    except SQLAlchemyError as exc:
        log.warning("in-process notification delivery stopped (%s); rows stay pending", exc)
    finally:
        session.close()


def deliver_notifications_job() -> str:
    """RQ entry point: deliver the due outbox rows; schedule the next retry if one is pending."""
    from dtx_trials import create_app
    from dtx_trials.channels import channels_from_config
    from dtx_trials.services.notifications import deliver_pending, next_retry_at

    app = create_app()
    with app.app_context():
        try:
            report = deliver_pending(db.session, channels_from_config(app.config))
            retry_at = next_retry_at(db.session)
            url = queue_url(app)
            if retry_at is not None and url:
                from redis import Redis
                from rq import Queue

                Queue(queue_name(app), connection=Redis.from_url(url)).enqueue_at(
                    retry_at, deliver_notifications_job, job_timeout=600, result_ttl=3600
                )
            return f"sent {report.sent}, retrying {report.retrying}, failed {report.failed}"
        finally:
            db.session.remove()
            db.engine.dispose()
