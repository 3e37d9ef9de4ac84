"""Analysis datasets, populations, estimators validated against R, PDF report and exports.

May import protocols; never Flask, SQLAlchemy or dtx_trials.
"""
