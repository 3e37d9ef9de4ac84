"""Pure form engine: field types, the safe expression language, edit checks, schedule, renderers.

Imports no other package of ours and nothing of Flask or SQLAlchemy.
"""
