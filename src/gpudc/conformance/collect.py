"""Reading each node's state: the collector script over the validator's SSH fan-out.

Every node gets a NodeState: its facts, or why there are none (unreachable, host key, timeout,
garbled output). One bad node costs at most its own timeouts.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from gpudc.conformance import collector_script
from gpudc.errors import InputError
from gpudc.plan.types import Node, Plan
from gpudc.validate.fanout import FanOut, HostResult, JumpHost, SshOptions, Target

#: Units provisioning enables: the driver's persistence daemon and DCGM on every node, fabric
#: manager and IMEX where the plan expects them (the roles' *_service defaults).
BASE_SERVICES = ("nvidia-persistenced", "nvidia-dcgm")
FM_SERVICE = "nvidia-fabricmanager"
IMEX_SERVICE = "nvidia-imex"
#: The collector's own budget: a few quick commands plus the NVML child's timeout.
COMMAND_TIMEOUT_S = 60.0
NVML_TIMEOUT_S = 20.0


@dataclass(slots=True)
class Reach:
    """How to reach a site's nodes: the SSH side of `gpudc.access.SiteAccess`. Paths only."""

    identity: Path | None  # None: the ssh-agent's keys
    known_hosts: Path | None
    addresses: dict[str, str] = field(default_factory=dict)
    user: str = "root"
    port: int = 22
    jump: str | None = None


def site_reach(plan: Plan) -> Reach:
    """The one place this area learns how to reach nodes: the site's access boundary."""
    from gpudc.access import site_access

    access = site_access(plan)
    return Reach(access.ssh_identity, access.known_hosts, dict(access.addresses), access.ssh_user,
                 access.ssh_port, access.jump)


def required_services(node: Node) -> list[str]:
    exp = node.expected
    return [*BASE_SERVICES, *([FM_SERVICE] if exp.fabric_manager else []), *([IMEX_SERVICE] if exp.imex else [])]


@cache
def collector_source() -> str:
    return Path(collector_script.__file__).read_text()


def collector_command(node: Node, nvml_timeout: float = NVML_TIMEOUT_S) -> str:
    packages = list(node.expected.packages)
    for name in packages:
        if "," in name or not name.isprintable() or not name:
            raise InputError(f"node {node.name}: bad package name {name!r} in its profile")
    args = [
        "python3", "-",
        "--packages", ",".join(packages),
        "--services", ",".join(required_services(node)),
        "--nvml-timeout", f"{nvml_timeout:g}",
    ]
    return " ".join(shlex.quote(a) for a in args)


@dataclass(slots=True)
class NodeState:
    node: str
    facts: dict[str, Any] | None
    error: str | None = None  # why there are no facts (never holds a secret: host, status, message)


def parse_output(name: str, result: HostResult) -> NodeState:
    if result.status != "ok":
        return NodeState(name, None, f"{result.status}: {result.message}")
    line = None
    for candidate in result.stdout.splitlines():
        if candidate.startswith(collector_script.MARKER):
            line = candidate[len(collector_script.MARKER) :].strip()
    if line is None:
        why = "python3 is not installed" if result.exit_status == 127 else "no collector output"
        tail = " ".join(result.stderr.split())[-160:]
        return NodeState(name, None, f"error: {why}" + (f" ({tail})" if tail else ""))
    try:
        facts = json.loads(line)
    except ValueError:
        return NodeState(name, None, "error: collector output is truncated or not JSON")
    if not isinstance(facts, dict) or facts.get("schema") != collector_script.SCHEMA:
        return NodeState(name, None, "error: collector output of another schema")
    if "error" in facts:
        return NodeState(name, None, f"error: collector failed: {facts['error']}")
    return NodeState(name, facts)


def ssh_options(
    plan: Plan,
    reach: Reach,
    *,
    parallel: int = 64,
    connect_timeout: float = 10.0,
    command_timeout: float = COMMAND_TIMEOUT_S,
    deadline: float | None = None,
    tofu: bool = False,
) -> SshOptions:
    if reach.identity is None and not os.environ.get("SSH_AUTH_SOCK"):
        raise InputError(
            f"no controller key of site {plan.site.name!r} in its secret dir and no ssh-agent (SSH_AUTH_SOCK)"
        )
    return SshOptions(
        user=reach.user,
        port=reach.port,
        jump=JumpHost.parse(reach.jump) if reach.jump else None,
        identity=reach.identity,
        known_hosts=reach.known_hosts,
        tofu=tofu,
        parallel=parallel,
        connect_timeout=connect_timeout,
        auth_timeout=connect_timeout,
        command_timeout=command_timeout,
        deadline=deadline,
    )


def collect_states(
    nodes: Sequence[Node], ssh: SshOptions, addresses: Mapping[str, str] | None = None
) -> dict[str, NodeState]:
    """Run the collector on every node; one NodeState per node, whatever happens to it."""
    addresses = addresses or {}
    targets = [Target(n.name, addresses.get(n.name, n.ssh_address)) for n in nodes]
    # the NVML child must give up well inside the node's own limit, so its other facts still come back
    nvml_timeout = max(1.0, min(NVML_TIMEOUT_S, ssh.command_timeout / 3))
    commands = {n.name: collector_command(n, nvml_timeout) for n in nodes}
    with FanOut(ssh) as fan:
        results = fan.run(targets, lambda t: commands[t.name], collector_source().encode())
    return {r.name: parse_output(r.name, r) for r in results}
