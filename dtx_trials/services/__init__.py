"""Use cases: one function = one transaction, with the audit events inside it."""
