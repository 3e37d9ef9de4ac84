"""Typed domain errors. Each carries its HTTP status; one handler renders them all."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a client can cause; never a 5xx."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, errors: dict[str, Any] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or {}
        self.extra = extra


class ValidationError(DomainError):
    status = 422
    code = "invalid"


class AuthenticationError(DomainError):
    status = 401
    code = "unauthenticated"


class PermissionDenied(DomainError):
    status = 403
    code = "forbidden"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class StaleWriteError(Conflict):
    code = "stale_version"


class AccountLocked(DomainError):
    status = 429
    code = "account_locked"
