"""Pure allocation designs, versioned HMAC draws, allocation lists and simulation metrics.

Imports no other package of ours and nothing of Flask or SQLAlchemy.
"""
