"""Any text gives issues, never an exception other than ProtocolError."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.loader import load_protocol_report

MINIMAL = (Path(__file__).parent / "data" / "minimal.yaml").read_text(encoding="utf-8")

LINES = MINIMAL.splitlines()
TOKENS = ["", "x", "-1", "1.5", "null", "[]", "{}", "[a, b]", "true", "'[zz] = 1'", "{en: ''}",
          "\"[age] >= \"", "permuted_block", "minimization", "otherwise: true", "0"]


@st.composite
def mutated_documents(draw: st.DrawFn) -> str:
    """Drop, duplicate or rewrite a few lines of a valid document."""
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "duplicate", "value", "indent"]))
        line = lines[index]
        if action == "drop":
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, line)
        elif action == "indent":
            lines[index] = "  " + line
        elif ":" in line:
            key = line.split(":", 1)[0]
            lines[index] = f"{key}: {draw(st.sampled_from(TOKENS))}"
        if not lines:
            lines = ["a: 1"]
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(mutated_documents())
def test_mutated_documents_never_crash(text: str) -> None:
    result = load_protocol_report(text, "fuzz.yaml")
    assert (result.protocol is None) == bool(result.errors)
    for issue in result.issues:
        assert issue.line >= 1 and issue.column >= 1
        assert issue.file == "fuzz.yaml"


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(text: str) -> None:
    result = load_protocol_report(text)
    assert result.protocol is None
    assert result.errors
