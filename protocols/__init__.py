"""The protocol language: typed model, YAML loader with line-numbered errors, diff, JSON Schema.

May import ecrf and randomization; never Flask, SQLAlchemy or dtx_trials.
"""

from .canonical import canonical_json, from_canonical_dict, protocol_sha256, to_canonical_dict
from .diff import Change, check_amendment, diff_protocols
from .loader import (
    LIBRARY_DIR,
    Issue,
    LoadResult,
    ProtocolError,
    library_protocol_paths,
    load_protocol,
    load_protocol_report,
    load_protocol_text,
    validate_protocol_text,
)
from .model import Protocol
from .schema import json_schema

__all__ = [
    "LIBRARY_DIR",
    "Change",
    "Issue",
    "LoadResult",
    "Protocol",
    "ProtocolError",
    "canonical_json",
    "check_amendment",
    "diff_protocols",
    "from_canonical_dict",
    "json_schema",
    "library_protocol_paths",
    "load_protocol",
    "load_protocol_report",
    "load_protocol_text",
    "protocol_sha256",
    "to_canonical_dict",
    "validate_protocol_text",
]
