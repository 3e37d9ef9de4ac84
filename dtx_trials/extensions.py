"""Extensions, created unbound and bound in the factory."""

from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from marshmallow import INCLUDE, Schema, fields

from dtx_trials.db import Base


class ErrorSchema(Schema):
    """The one error shape. Some errors add context (e.g. `current_version` on a 409 stale
    write, `issues` with line numbers on a rejected protocol), so extra keys are allowed."""

    class Meta:
        unknown = INCLUDE

    code = fields.Integer(metadata={"description": "HTTP status code"})
    status = fields.String(metadata={"description": "HTTP status name"})
    message = fields.String(metadata={"description": "what went wrong"})
    errors = fields.Dict(metadata={"description": "field path -> messages"})


class DtxApi(Api):  # type: ignore[misc]
    ERROR_SCHEMA = ErrorSchema


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
api = DtxApi()
