"""Text that every layer can store and export.

PostgreSQL refuses NUL in text, UTF-8 cannot encode an unpaired UTF-16 surrogate (so neither
the database driver nor the audit hash can take one), and XML 1.0 (CDISC ODM, define.xml) has
no way to write the other C0 control characters or U+FFFE/U+FFFF. SQLite stores all of them,
which is how such text used to slip in. One check, applied to every text a request, a protocol
document or an import brings in; tab, line feed and carriage return stay allowed.
"""

from __future__ import annotations

import re

__all__ = ["shown_safely", "text_problem"]

_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def text_problem(text: str) -> str | None:
    """Return why ``text`` cannot be stored and exported as it is, or None when it can."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    char = found.group()
    position = found.start() + 1
    if char == "\x00":
        return f"must not contain NUL (U+0000) characters (character {position})"
    if "\ud800" <= char <= "\udfff":
        return (
            f"must not contain an unpaired UTF-16 surrogate (U+{ord(char):04X}, "
            f"character {position})"
        )
    return f"must not contain the control character U+{ord(char):04X} (character {position})"


def shown_safely(text: str) -> str:
    """Return ``text`` with every character ``text_problem`` objects to written as an escape
    (``\\x00``, ``\\ud800``), so that an error message can name the offending key."""
    return _UNSTORABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
