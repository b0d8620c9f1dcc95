"""The node probe, Python side: the script text, its command line, and reading its output.

    source = probe_source()                       # sent as the SSH channel's stdin
    cmd = probe_command("quick", 5.0, ["nvidia-open-570", ...])   # python3 - --level quick ...
    facts = parse_output(stdout)                  # dict, or ProbeOutputError

The script is gpudc/validate/probe_script.py (stdlib only). It prints one line
`@@gpudc-probe@@ {json}`; motd or shell noise around it is ignored. Its schema version and
fields are checked when the checks read it (gpudc.validate.facts), so a probe of another
schema version is a finding on that node, not an unreadable output.
"""

from __future__ import annotations

import json
import shlex
from functools import cache
from pathlib import Path
from typing import Any

from gpudc.validate import probe_script
from gpudc.validate.facts import SCHEMA

__all__ = ["LEVELS", "MARKER", "SCHEMA", "ProbeOutputError", "parse_output", "probe_command", "probe_source"]
MARKER = probe_script.MARKER
LEVELS = ("quick", "standard", "full")

#: Wall-clock budget a caller should allow the remote command per level (seconds), beyond the
#: NVML call deadlines: dcgmi diag -r 2 takes ~2 min, -r 3 ~15 min (validation.md), plus NCCL and nvbandwidth.
LEVEL_BUDGET_S = {"quick": 60.0, "standard": 600.0 + 60.0, "full": 2400.0 + 600.0 + 600.0 + 60.0}


class ProbeOutputError(Exception):
    """The probe's output is garbage or truncated: no JSON object behind the marker."""


@cache
def probe_source() -> str:
    """The self-contained stdlib python3 script (text) run on the node with `python3 -`."""
    return Path(probe_script.__file__).read_text()


def probe_command(
    level: str,
    nvml_call_timeout: float,
    expected_packages: list[str],
    dcgm_timeout: float | None = None,
) -> str:
    """The remote command line that runs the script read from stdin."""
    if level not in LEVELS:
        raise ValueError(f"level {level!r} is not one of {', '.join(LEVELS)}")
    if nvml_call_timeout <= 0:
        raise ValueError("nvml_call_timeout must be positive")
    args = ["python3", "-", "--level", level, "--call-timeout", f"{nvml_call_timeout:g}"]
    packages = [p for p in expected_packages if p]
    for name in packages:
        if "," in name or not name.isprintable():
            raise ValueError(f"bad package name {name!r}")
    if packages:
        args += ["--packages", ",".join(packages)]
    if dcgm_timeout:
        args += ["--dcgm-timeout", f"{dcgm_timeout:g}"]
    return " ".join(shlex.quote(a) for a in args)


def probe_budget_s(level: str, nvml_call_timeout: float) -> float:
    """How long the remote command may reasonably run (for the caller's command timeout)."""
    return LEVEL_BUDGET_S[level] + nvml_call_timeout * (probe_script.MAX_HANGS + 1)


def _evidence(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def parse_output(stdout: str) -> dict[str, Any]:
    """The JSON object the probe printed (not yet read against the schema: see
    gpudc.validate.facts.read_facts); ProbeOutputError with a short message otherwise."""
    if not stdout or not stdout.strip():
        raise ProbeOutputError("the probe printed nothing")
    line = None
    for candidate in stdout.splitlines():
        if candidate.startswith(MARKER):
            line = candidate[len(MARKER) :].strip()
    if line is None:
        raise ProbeOutputError(f"no probe output marker in: {_evidence(stdout)!r}")
    try:
        facts = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProbeOutputError(
            f"probe output is truncated or not JSON ({exc.msg} at char {exc.pos} of {len(line)})"
        ) from None
    if not isinstance(facts, dict):
        raise ProbeOutputError(f"probe output is a {type(facts).__name__}, expected an object")
    return facts
