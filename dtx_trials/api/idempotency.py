"""Creates a client may retry: the request is the unit of work, and a retry gets the first answer.

``@idempotent`` wraps the view of every create (participants, consents, form saves, device
batches, queries, signatures, randomization, ...), in the API and on the pages:

- The services' transactions only flush; the view builds its whole response, and then the
  request commits the change, its audit events and (with a key) the idempotency record in one
  transaction, as its very last database step. So a change that committed is never answered
  with a 5xx because something after the commit failed.
- With a key (header ``Idempotency-Key``, or the form field ``request_id`` the pages render),
  the first 2xx/3xx answer is stored (encrypted) under (user, key). The same key with the same
  request replays that answer (header ``Idempotent-Replayed: true``) without doing anything
  again; the same key with a different request is a 422. Two concurrent first attempts: one
  commits, the other gets 409 and its retry replays the first's answer.
- A failed request (4xx, 5xx) stores nothing: fix it and send it again with the same key.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from copy import deepcopy
from typing import Any, TypeVar

from flask import Response, current_app, g, request
from sqlalchemy import select

from dtx_trials.db import deferred_commit
from dtx_trials.extensions import db
from dtx_trials.models import IdempotentRequest
from dtx_trials.services.errors import ValidationError

HEADER = "Idempotency-Key"
FORM_FIELD = "request_id"
_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")
_REPLAYED_HEADERS = ("Content-Type", "Location")
F = TypeVar("F", bound=Callable[..., Any])

HEADER_DOC = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,128}$"},
    "description": "Makes a retry safe: the first answer under this key is replayed "
    "(header Idempotent-Replayed: true); the same key with a different request is 422.",
}


def _request_key() -> str | None:
    key = request.headers.get(HEADER)
    if key is None and request.mimetype in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        key = request.form.get(FORM_FIELD) or None
    if key is not None and not _KEY.match(key):
        raise ValidationError(
            "invalid idempotency key",
            {"headers": {HEADER: ["1 to 128 printable ASCII characters, no spaces"]}},
        )
    return key


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for part in (request.method, request.full_path, request.mimetype):
        digest.update(part.encode("utf-8", "backslashreplace") + b"\x00")
    digest.update(request.get_data(cache=True))
    return digest.hexdigest()


def _replay(stored: IdempotentRequest, fingerprint: str) -> Response:
    if stored.fingerprint != fingerprint:
        raise ValidationError(
            "this idempotency key was used for a different request",
            {"headers": {HEADER: [f"already used for {stored.method} {stored.path}"]}},
        )
    answer = json.loads(stored.response)
    response = Response(answer["body"], status=answer["status"], headers=answer["headers"])
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _record(scope: str, key: str, fingerprint: str, response: Response) -> IdempotentRequest:
    answer = {
        "status": response.status_code,
        "headers": {h: response.headers[h] for h in _REPLAYED_HEADERS if h in response.headers},
        "body": response.get_data(as_text=True),
    }
    return IdempotentRequest(
        scope=scope,
        key=key,
        fingerprint=fingerprint,
        method=request.method,
        path=request.path[:500],
        response=json.dumps(answer),
    )


def idempotent(view: F) -> F:
    """Serve the view as one unit of work that a client may retry (see the module doc)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        key = _request_key()
        actor = g.get("actor")
        scope = f"user:{actor.user_id}" if actor is not None and actor.user_id else None
        fingerprint = _fingerprint() if key and scope else ""
        if key and scope:
            stored = db.session.scalars(
                select(IdempotentRequest).where(
                    IdempotentRequest.scope == scope, IdempotentRequest.key == key
                )
            ).first()
            db.session.rollback()  # end the read before the view's own transactions
            if stored is not None:
                return _replay(stored, fingerprint)
        with deferred_commit(db.session):
            response = current_app.make_response(view(*args, **kwargs))
            if key and scope and 200 <= response.status_code < 400:
                db.session.add(_record(scope, key, fingerprint, response))
        db.session.commit()  # outside the block: what runs after commit commits as usual
        return response

    apidoc = deepcopy(getattr(wrapper, "_apidoc", {}))
    manual = apidoc.setdefault("manual_doc", {})
    manual["parameters"] = [*manual.get("parameters", []), HEADER_DOC]
    wrapper._apidoc = apidoc  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
