"""A validation run: plan -> SSH fan-out of the probe -> checks -> verdicts, recorded in the history.

    verdicts = run_validate(plan, limit="gb200-*", level="quick", ssh=SshOptions(...))

`gpudc validate`, `gpudc up` and the reprovision workflow call `run_validate` (or `validate`,
which also returns what the reports need). Every node gets a Verdict, whatever happens to it:
unreachable (connect, host key, auth), a hung or garbled probe, or the checks' verdict.
"""

from __future__ import annotations

import fnmatch
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typing_extensions import Unpack

from gpudc.errors import InputError
from gpudc.plan.types import Node, Plan
from gpudc.validate import checks
from gpudc.validate.crossnode import CrossNode
from gpudc.validate.fanout import FanOut, HostResult, SshOptions, Target
from gpudc.validate.history import History, count_flips, default_history_path
from gpudc.validate.policy import Policy, load_policy
from gpudc.validate.probe import (
    LEVELS,
    ProbeOutputError,
    parse_output,
    probe_budget_s,
    probe_command,
    probe_source,
)
from gpudc.validate.reports import RunInfo
from gpudc.validate.types import Finding, Verdict

#: How a fan-out outcome that yields no facts is reported: (check name, what it means).
UNREACHABLE_CHECKS: dict[str, str] = {
    "unreachable": "ssh.connect",
    "host_key": "ssh.host_key",
    "auth": "ssh.auth",
    "timeout": "probe.timeout",
    "deadline": "run.deadline",
    "error": "probe.output",
}
FLAPPING_CHECK = "history.flapping"


@dataclass(slots=True)
class ValidateRun:
    verdicts: list[Verdict]
    info: RunInfo
    checks: list[str]  # every check that ran (for JUnit / Prometheus)
    run_id: int | None  # the history's run id (None: not recorded)
    # node -> probe facts, for nodes that were probed (collect: the facts of each node-local
    # verdict it judged, parsed when first looked up)
    facts: Mapping[str, dict[str, Any]]


def select_nodes(plan: Plan, limit: str | None) -> list[Node]:
    """Nodes matching `limit`: comma-separated fnmatch patterns on node, pool, rack, hall,
    NVLink domain or SKU names. None or "" selects every node."""
    if not limit or not limit.strip():
        return list(plan.nodes)
    patterns = [p.strip() for p in limit.split(",") if p.strip()]
    chosen: list[Node] = []
    for node in plan.nodes:
        names = [node.name, node.pool, node.rack, node.hall, node.sku, node.nvlink_domain or ""]
        if any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names if n):
            chosen.append(node)
    if not chosen:
        raise InputError(
            f"--limit {limit!r}: matches no node, pool, rack or hall of stack {plan.site.stack!r}"
        )
    return chosen


def _threshold(policy: Policy, name: str) -> int:
    """Flapping thresholds (`flapping_window`, `flapping_min_flips`) are policy data."""
    return int(policy.threshold(name))


def _tail(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else "..." + flat[-(limit - 3) :]


def _facts_or_verdict(result: HostResult) -> tuple[dict[str, Any] | None, Verdict | None]:
    if result.status != "ok":
        return None, Verdict.unreachable(
            result.name, UNREACHABLE_CHECKS[result.status], result.message, result.fingerprint
        )
    try:
        return parse_output(result.stdout), None
    except ProbeOutputError as exc:
        why = str(exc)
        if result.exit_status == 127:
            why = "python3 is not installed on the node (exit 127)"
        elif result.exit_status not in (0, None):
            why = f"{why} (exit status {result.exit_status})"
        return None, Verdict.unreachable(
            result.name, "probe.output", f"probe output unusable: {why}", _tail(result.stderr)
        )


@contextmanager
def _progress(total: int, enabled: bool, console: Console | None) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    progress = Progress(
        TextColumn("[bold]validate[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )
    with progress:
        task = progress.add_task("", total=total)
        counts: Counter[str] = Counter()

        def advance(result: HostResult) -> None:
            counts["probed" if result.status == "ok" else "unreachable"] += 1
            desc = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            progress.update(task, advance=1, description=desc)

        yield advance


def validate(
    plan: Plan,
    *,
    ssh: SshOptions,
    limit: str | None = None,
    level: str = "quick",
    history_path: Path | None = None,
    record_history: bool = True,
    policy_overrides: dict[str, Any] | None = None,
    addresses: Mapping[str, str] | None = None,
    nvml_call_timeout: float = 5.0,
    command_timeout: float | None = None,
    progress: bool = True,
    console: Console | None = None,
    cross_node: bool = True,
    cross_node_timeout: float = 120.0,
) -> ValidateRun:
    """Probe the selected nodes, judge them, record the run; see `run_validate`."""
    if level not in LEVELS:
        raise InputError(f"--level {level!r}: expected one of {', '.join(LEVELS)}")
    if nvml_call_timeout <= 0:
        raise InputError(f"nvml_call_timeout {nvml_call_timeout}: must be positive")
    nodes = select_nodes(plan, limit)
    policy = load_policy(policy_overrides)
    timeout = command_timeout if command_timeout is not None else probe_budget_s(level, nvml_call_timeout)
    ssh = replace(ssh, command_timeout=timeout)
    addresses = addresses or {}
    targets = [Target(n.name, addresses.get(n.name, n.ssh_address)) for n in nodes]
    commands = {n.name: probe_command(level, nvml_call_timeout, sorted(n.expected.packages)) for n in nodes}
    by_name = {n.name: n for n in nodes}
    history = History(history_path or default_history_path()) if record_history else None
    started = time.time()
    try:
        with FanOut(ssh) as fan, _progress(len(targets), progress, console) as on_result:
            results = fan.run(targets, lambda t: commands[t.name], probe_source().encode(), on_result)
        extra: dict[str, list[Finding]] = {}
        cross: CrossNode | None = None
        if level == "full" and cross_node:
            # pair and set measurements among the nodes that answered the probe
            probed = [by_name[r.name] for r in results if r.status == "ok"]
            cross = CrossNode(ssh, policy, addresses, cross_node_timeout)
            extra = cross.run(probed)
        run_id = history.start_run(plan.site.stack, plan.site.name, level, len(nodes)) if history else None
        verdicts: list[Verdict] = []
        all_facts: dict[str, dict[str, Any]] = {}
        flapping: dict[str, int] = {}
        window = _threshold(policy, "flapping_window")
        min_flips = _threshold(policy, "flapping_min_flips")
        judged: list[tuple[Node, Verdict | None, bool, float | None, list[str]]] = []
        for result in results:
            node = by_name[result.name]
            facts, verdict = _facts_or_verdict(result)
            boot_time: float | None = None
            xid_ids: list[str] = []
            if facts is not None:
                all_facts[node.name] = facts
                boot = facts.get("boot_time")
                boot_time = float(boot) if isinstance(boot, int | float) else None
                view = history.view(node.name, boot_time, before_run=run_id) if history else None
                verdict = checks.evaluate(node.name, facts, node.expected, policy, view)
                xid_ids = checks.reported_xid_ids(facts, policy)
            judged.append((node, verdict, facts is not None, boot_time, xid_ids))
        if cross is not None:
            # a set's all_reduce below its floor goes to the members whose own measurements fail
            suspects = {
                node.name for node, v, _, _, _ in judged for f in [*(v.findings if v else []), *extra.get(node.name, [])]
                if f.severity == "fail" and f.check.startswith("perf:") and f.check != "perf:nccl_multinode"
            }
            extra = cross.attribute_sets(extra, suspects)
        for node, verdict, probed_ok, boot_time, xid_ids in judged:
            if probed_ok and verdict is not None and extra.get(node.name):
                verdict = Verdict.from_findings(node.name, [*verdict.findings, *extra[node.name]])
            assert verdict is not None
            if history is not None and run_id is not None:
                verdict = flag_flapping(history, node.name, verdict, window, min_flips, flapping)
                history.record(run_id, verdict, boot_time, xid_ids)
            verdicts.append(verdict)
        if history is not None and run_id is not None:
            history.finish_run(run_id)
    finally:
        if history is not None:
            history.close()
    info = RunInfo(
        stack=plan.site.stack,
        site=plan.site.name,
        level=level,
        started=started,
        seconds=time.time() - started,
        flapping=flapping,
    )
    return ValidateRun(verdicts, info, [name for name, _ in checks.CHECKS], run_id, all_facts)


def flag_flapping(history: History, node: str, verdict: Verdict, window: int, min_flips: int,
                  flapping: dict[str, int]) -> Verdict:
    """The verdict, marked flapping (and the node noted in `flapping`) when it and the node's
    last `window - 1` recorded runs changed between pass and fail at least `min_flips` times."""
    recent = [*history.recent_verdicts(node, window - 1), verdict.verdict]
    flips = count_flips(recent)
    if flips < min_flips:
        return verdict
    flapping[node] = flips
    return _with_flapping(verdict, flips, len(recent))


def _with_flapping(verdict: Verdict, flips: int, runs: int) -> Verdict:
    finding = Finding(
        FLAPPING_CHECK,
        "warn",
        f"flapping: the verdict changed between pass and fail {flips} times in the last {runs} runs",
        "none",
    )
    if verdict.verdict == "unreachable":
        return Verdict(verdict.node, verdict.verdict, verdict.action, [*verdict.findings, finding])
    return Verdict.from_findings(verdict.node, [*verdict.findings, finding])


class ValidateOptions(TypedDict, total=False):
    """The keyword options of `validate` / `run_validate` besides `ssh`."""

    limit: str | None
    level: str
    history_path: Path | None
    record_history: bool
    policy_overrides: dict[str, Any] | None
    addresses: Mapping[str, str] | None
    nvml_call_timeout: float
    command_timeout: float | None
    progress: bool
    console: Console | None
    cross_node: bool
    cross_node_timeout: float


def run_validate(plan: Plan, *, ssh: SshOptions, **options: Unpack[ValidateOptions]) -> list[Verdict]:
    """Validate the plan's nodes (those `limit` selects) over SSH; one Verdict per node, in plan order.

    - ssh: how to reach nodes (user, key or agent, known_hosts, TOFU, jump host, pool size,
      connect/auth timeouts, run-wide deadline). Its command_timeout is replaced by
      `command_timeout`, or by the probe's budget for the level when that is None.
    - history_path: the SQLite history (default GPUDC_HISTORY or state_dir()/history.db);
      record_history=False neither reads nor writes it (no escalation, no flapping).
    - policy_overrides: the site's overrides of catalog/validation (load_policy).
    - addresses: node name -> address to dial instead of the plan's in-band address.
    - progress: a rich progress bar on stderr (or on `console`).
    - cross_node: at level full, also GPUDirect ib_write_bw between node pairs per rail and NCCL
      all_reduce across each NVLink domain / SU / pool (gpudc.validate.crossnode), each remote
      command bounded by cross_node_timeout.
    Raises InputError for a bad limit, level, key or known_hosts file; never for a bad node.
    """
    return validate(plan, ssh=ssh, **options).verdicts


def exit_code(verdicts: Sequence[Verdict]) -> int:
    """0 all pass (warnings allowed), 1 some fail, 3 some unreachable (1 wins if both)."""
    kinds = {v.verdict for v in verdicts}
    if "fail" in kinds:
        return 1
    if "unreachable" in kinds:
        return 3
    return 0
