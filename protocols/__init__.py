"""The protocol language: typed model, YAML loader with line-numbered errors, diff, JSON Schema.

May import ecrf and randomization; never Flask, SQLAlchemy or dtx_trials.
"""
