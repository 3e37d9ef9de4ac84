"""The JSON Schema is valid draft 2020-12 and accepts the library protocols."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from protocols.schema import json_schema, json_schema_text
from protocols.structure import PROTOCOL

LIBRARY = sorted((Path(__file__).resolve().parents[2] / "protocols" / "library").glob("*.yaml"))


def test_schema_is_valid_draft_2020_12() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["required"]) == {p.name for p in PROTOCOL.props if p.required}
    field = schema["$defs"]["Field"]
    assert "decimal" in field["properties"]["type"]["enum"]
    assert field["properties"]["show_if"]["description"].startswith("Branching")
    method = schema["$defs"]["Randomization"]["properties"]["method"]
    assert method["enum"] == ["simple", "permuted_block", "minimization", "efron", "big_stick",
                              "block_urn", "maximal", "list"]
    model = schema["$defs"]["Analysis"]["properties"]["model"]
    assert "gee_per_eye" in model["enum"]
    assert json_schema_text().startswith("{\n")


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_library_protocols_validate_against_schema(path: Path) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(json_schema())
    assert [e.message for e in validator.iter_errors(document)] == []


def test_schema_rejects_unknown_keys_and_bad_enums() -> None:
    document = yaml.safe_load(LIBRARY[0].read_text(encoding="utf-8"))
    document["arms"][0]["ratoi"] = 1
    document["randomization"]["method"] = "coin"
    messages = [e.message for e in
                jsonschema.Draft202012Validator(json_schema()).iter_errors(document)]
    assert len(messages) == 2


def test_schema_leaves_and_descriptive_keys_cli() -> None:
    """`dtx protocol schema --descriptive` lists the descriptive keys, each a schema leaf."""
    from click.testing import CliRunner

    from dtx_trials.cli.protocol import protocol
    from protocols.schema import DESCRIPTIVE_KEYS, schema_leaves

    leaves = schema_leaves()
    assert len(leaves) == len(set(leaves))
    assert {"randomization.overall_weight", "arms[].ratio", "blinding.unblinding_notify[]",
            "forms[].fields[].choices[].label.zh"} <= set(leaves)
    result = CliRunner().invoke(protocol, ["schema", "--descriptive"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split("\t")[0] for line in lines[:-1]] == [
        key for key in leaves if key in DESCRIPTIVE_KEYS
    ]
    assert lines[-1].startswith(f"{len(DESCRIPTIVE_KEYS)} of {len(leaves)} keys are descriptive")
