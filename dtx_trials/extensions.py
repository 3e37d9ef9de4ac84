"""Extensions, created unbound and bound in the factory."""

from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy

from dtx_trials.db import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
api = Api()
