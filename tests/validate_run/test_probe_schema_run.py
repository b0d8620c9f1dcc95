"""A node's probe output of another schema version reaches the checks (a finding on that node),
instead of being dropped as unusable output (unreachable)."""

from __future__ import annotations

import json

from gpudc.validate.facts import SCHEMA
from gpudc.validate.fanout import HostResult
from gpudc.validate.probe import MARKER
from gpudc.validate.run import _facts_or_verdict


def _result(doc: object) -> HostResult:
    return HostResult("n1", "ok", exit_status=0, stdout=f"{MARKER} {json.dumps(doc)}\n")


def test_other_schema_version_is_read_not_unreachable() -> None:
    facts, verdict = _facts_or_verdict(_result({"schema": SCHEMA + 1, "gpus": {}}))
    assert verdict is None and facts is not None and facts["schema"] == SCHEMA + 1


def test_garbage_output_is_still_unusable() -> None:
    facts, verdict = _facts_or_verdict(HostResult("n1", "ok", exit_status=0, stdout=f"{MARKER} [1]\n"))
    assert facts is None and verdict is not None
    assert verdict.verdict == "unreachable" and "expected an object" in verdict.findings[0].message
