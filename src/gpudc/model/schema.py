"""JSON Schema of a stack file, generated from the model (for editors).

`python -m gpudc.model.schema > schema/stack.schema.json`; a test keeps the checked-in copy current.
"""

from __future__ import annotations

import json
from typing import Any

from gpudc.model.loader import NAMESPACE
from gpudc.model.site import Site


def stack_schema() -> dict[str, Any]:
    site = Site.model_json_schema(mode="validation")
    defs = site.pop("$defs", {})
    # A network may be written as one prefix or a list of prefixes (NetworkSpec accepts both).
    prefix_list = defs["NetworkSpec"]["properties"]["prefixes"]
    defs["NetworkSpec"] = {"anyOf": [defs["NetworkSpec"], {"type": "string"}, prefix_list]}
    properties = {f"{NAMESPACE}{key}": value for key, value in site["properties"].items()}
    required = [f"{NAMESPACE}{key}" for key in site.get("required", [])]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://gpudc.dev/schema/stack.schema.json",
        "title": "gpudc Pulumi stack file (Pulumi.<site>.yaml)",
        "type": "object",
        "properties": {
            "config": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": True,
            },
            "secretsprovider": {"type": "string"},
            "encryptedkey": {"type": "string"},
            "encryptionsalt": {"type": "string"},
        },
        "required": ["config"],
        "$defs": defs,
    }


def render() -> str:
    return json.dumps(stack_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
