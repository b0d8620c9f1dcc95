"""The checked-in JSON Schema is current and accepts every stack."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from gpudc.model import list_stacks
from gpudc.model.schema import render
from gpudc.project import require_project

SCHEMA = Path(__file__).resolve().parents[2] / "schema" / "stack.schema.json"


def test_schema_is_current() -> None:
    assert SCHEMA.read_text() == render(), "run `make schema` and commit schema/stack.schema.json"


def test_every_stack_validates_against_the_schema() -> None:
    import json

    schema = json.loads(SCHEMA.read_text())
    for name in list_stacks():
        document = yaml.safe_load(require_project().stack_file(name).read_text())
        jsonschema.validate(document, schema)


def test_schema_rejects_unknown_gpudc_keys() -> None:
    import json

    schema = json.loads(SCHEMA.read_text())
    document = {"config": {"gpudc:site": {"name": "x", "provider": "p", "region": "r", "data_residency": "jp",
                                          "colour": "red"}}}
    try:
        jsonschema.validate(document, schema)
    except jsonschema.ValidationError as exc:
        assert "colour" in exc.message or "required" in exc.message
    else:
        raise AssertionError("schema accepted an unknown key")
