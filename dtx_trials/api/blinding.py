"""Blinding lives in schemas: one place chooses the response shape by role.

Blinded roles get `AllocationReceiptSchema` (randomization number, activation code); only
roles that may see arms get `UnblindedAllocationSchema`. Nothing else in the API reads
`Allocation.arm_code`.
"""

from __future__ import annotations

import functools
from typing import Any

from flask import Response, jsonify
from marshmallow import Schema, fields

from dtx_trials.extensions import db
from dtx_trials.models import Allocation, Trial
from dtx_trials.services.access import Actor, sees_arms
from dtx_trials.services.protocols import blinded_roles


class AllocationReceiptSchema(Schema):
    seq_no = fields.Integer()
    randomization_number = fields.String()
    activation_code = fields.String(allow_none=True)
    allocated_at = fields.DateTime()
    status = fields.String()


class UnblindedAllocationSchema(AllocationReceiptSchema):
    arm_code = fields.String()
    stratum_key = fields.String()
    factors = fields.Dict(keys=fields.String(), values=fields.String())
    method = fields.String()
    evidence = fields.Dict()
    void_reason = fields.String(allow_none=True)
    subject_code = fields.String()


def allocation_schema(actor: Actor, trial: Trial, many: bool = False) -> Schema:
    """Return the allocation schema this actor may receive for this trial."""
    sees = sees_arms(actor, trial.id, blinded_roles(db.session, trial))
    return _schema(UnblindedAllocationSchema if sees else AllocationReceiptSchema, many)


@functools.cache
def _schema(cls: type[Schema], many: bool) -> Schema:
    """One instance per shape (a schema without context dumps the same from any thread)."""
    return cls(many=many)


def shaped(
    actor: Actor,
    trial: Trial,
    allocation: Allocation | list[Any],
    status: int = 200,
    schema: Schema | None = None,
) -> Response:
    """The allocation(s) as JSON in the actor's shape (``schema``: that shape, chosen
    beforehand with `allocation_schema`, e.g. before a lock is taken)."""
    many = isinstance(allocation, list)
    response = jsonify((schema or allocation_schema(actor, trial, many=many)).dump(allocation))
    response.status_code = status
    return response
