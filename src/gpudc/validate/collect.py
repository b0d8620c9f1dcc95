"""Gather the node-local verdicts gpudc-probe wrote (run by Slurm on every node) into the history
and the reports, without probing again.

    run = collect_verdicts(plan, source=Path("/shared/gpudc/verdicts"))   # a spool folder
    run = collect_verdicts(plan, ssh=SshOptions(...))                      # each node's latest file

Each node's latest verdict (gpudc.validate.node_health, format gpudc-node-verdict 1) carries the
probe facts it judged; they are judged again here by the whole policy, with the node's history
(XID dedupe, reboot escalation, flapping), exactly as `gpudc validate` judges facts it fetched
over SSH, and recorded as one run. A node without a verdict, with an unreadable one, or with one
older than `max_age_s` is reported unreachable (check collect.*), never judged on old facts.

A spool folder holds `<node>.json` or `<node>/verdict.json` per node (nodes copying their file
to shared storage, or any transport that lands them there).
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from gpudc.errors import InputError
from gpudc.plan.types import Node, Plan
from gpudc.validate import checks
from gpudc.validate.fanout import FanOut, SshOptions, Target
from gpudc.validate.history import History, default_history_path
from gpudc.validate.node_health import FORMAT, STATE_DIR, VERSION
from gpudc.validate.policy import Policy, load_policy
from gpudc.validate.reports import RunInfo
from gpudc.validate.run import ValidateRun, flag_flapping, select_nodes
from gpudc.validate.types import Finding, Verdict

#: Default age beyond which a node-local verdict is stale (Slurm's default HealthCheckInterval is
#: set by the site; three intervals of 5 minutes).
MAX_AGE_S = 900.0
LEVEL = "collect"
SSH_COMMAND = f"cat {STATE_DIR}/verdict.json"


class Loaded:
    """One node's verdict document, or why there is none."""

    __slots__ = ("doc", "problem")

    def __init__(self, doc: dict[str, Any] | None, problem: tuple[str, str] | None = None) -> None:
        self.doc = doc
        self.problem = problem  # (check, message)


def parse_verdict(text: str | bytes, node: str, now: float, max_age_s: float) -> Loaded:
    """A node-local verdict document, checked for format, node name and age."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return Loaded(None, ("collect.unreadable", f"node-local verdict is not JSON ({exc})"))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return Loaded(None, ("collect.unreadable", f"not a {FORMAT} document"))
    if doc.get("version") != VERSION:
        return Loaded(None, ("collect.unreadable", f"{FORMAT} version {doc.get('version')!r}, expected {VERSION}"))
    if doc.get("node") != node:
        return Loaded(None, ("collect.unreadable", f"the verdict is of node {doc.get('node')!r}"))
    when = doc.get("time")
    if not isinstance(when, int | float):
        return Loaded(None, ("collect.unreadable", "the verdict has no time"))
    age = now - float(when)
    if age > max_age_s:
        return Loaded(None, ("collect.stale", f"latest node-local verdict is {age:.0f}s old (limit {max_age_s:g}s): "
                                              "is gpudc-probe running as Slurm's HealthCheckProgram?"))
    return Loaded(doc)


def _from_dir(folder: Path, nodes: list[Node], now: float, max_age_s: float) -> dict[str, Loaded]:
    def one(node: Node) -> tuple[str, Loaded]:
        for path in (folder / f"{node.name}.json", folder / node.name / "verdict.json"):
            try:
                return node.name, parse_verdict(path.read_bytes(), node.name, now, max_age_s)
            except FileNotFoundError:
                continue
            except OSError as exc:
                return node.name, Loaded(None, ("collect.unreadable", f"{path}: {exc.strerror}"))
        return node.name, Loaded(None, ("collect.missing", f"no node-local verdict in {folder}"))

    # one thread: parsing JSON holds the GIL, and a spool folder is local or a mounted file
    # system whose reads are short (a thread pool here cost more in lock hand-offs than it saved)
    return dict(map(one, nodes))


def _over_ssh(ssh: SshOptions, nodes: list[Node], addresses: Mapping[str, str], now: float,
              max_age_s: float) -> dict[str, Loaded]:
    targets = [Target(n.name, addresses.get(n.name, n.ssh_address)) for n in nodes]
    out: dict[str, Loaded] = {}
    with FanOut(replace(ssh, command_timeout=min(ssh.command_timeout, 30.0))) as fan:
        for result in fan.run(targets, SSH_COMMAND):
            if result.status != "ok":
                out[result.name] = Loaded(None, (f"collect.{result.status}", result.message))
            elif result.exit_status != 0:
                out[result.name] = Loaded(None, ("collect.missing",
                                                 f"no node-local verdict ({SSH_COMMAND}: exit {result.exit_status})"))
            else:
                out[result.name] = parse_verdict(result.stdout, result.name, now, max_age_s)
    return out


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Parsing thousands of verdict documents makes millions of dicts and lists that all stay
    alive until the run ends: the cyclic collector's full passes over them cost a third of the
    time and free nothing (a JSON document has no cycles). Reference counting still frees."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _node_note(doc: dict[str, Any]) -> Finding:
    """What the node said of itself (info): its own verdict, when, and whether it drained itself."""
    age = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(doc["time"])))
    drain = doc.get("drain")
    drained = {"drained": ", drained its node", "already": ", node already drained"}.get(
        str(drain), f", drain {drain}" if drain not in (None, "none") else "")
    reason = f": {doc['reason']}" if doc.get("reason") else ""
    return Finding("collect.node_verdict", "info", f"node-local {doc.get('verdict')} at {age} ({doc.get('mode')}"
                   f"{drained}){reason}"[:300])


def collect_verdicts(
    plan: Plan,
    *,
    source: Path | None = None,
    ssh: SshOptions | None = None,
    limit: str | None = None,
    history_path: Path | None = None,
    record_history: bool = True,
    policy_overrides: dict[str, Any] | None = None,
    addresses: Mapping[str, str] | None = None,
    max_age_s: float = MAX_AGE_S,
    now: float | None = None,
    on_node: Callable[[str], None] | None = None,
) -> ValidateRun:
    """Judge the latest node-local verdicts of the selected nodes and record them as one run.

    `source`: a spool folder; else `ssh` reads each node's file over the fan-out (no probe)."""
    if (source is None) == (ssh is None):
        raise InputError("collect: give a verdict folder or SSH options (one of them)")
    if max_age_s <= 0:
        raise InputError(f"--max-age {max_age_s}: must be positive")
    if source is not None and not source.is_dir():
        raise InputError(f"--collect {source}: not a folder")
    nodes = select_nodes(plan, limit)
    policy = load_policy(policy_overrides)
    started = time.time()
    now = started if now is None else now
    with _no_cyclic_gc():
        return _collect(plan, nodes, policy, source, ssh, addresses or {}, history_path, record_history, max_age_s,
                        started, now, on_node)


def _collect(plan: Plan, nodes: list[Node], policy: Policy, source: Path | None, ssh: SshOptions | None,
             addresses: Mapping[str, str], history_path: Path | None, record_history: bool, max_age_s: float,
             started: float, now: float, on_node: Callable[[str], None] | None) -> ValidateRun:
    if source is not None:
        loaded = _from_dir(source, nodes, now, max_age_s)
    else:
        assert ssh is not None
        loaded = _over_ssh(ssh, nodes, addresses, now, max_age_s)
    history = History(history_path or default_history_path()) if record_history else None
    verdicts: list[Verdict] = []
    all_facts: dict[str, dict[str, Any]] = {}
    flapping: dict[str, int] = {}
    run_id: int | None = None
    records: list[tuple[Verdict, float | None, list[str]]] = []
    try:
        if history is not None:
            # the whole run is recorded in one transaction at its end (record_many): a killed
            # collect leaves an unfinished run without verdicts, never half of one
            history.connection.execute("PRAGMA synchronous=NORMAL")
            run_id = history.start_run(plan.site.stack, plan.site.name, LEVEL, len(nodes))
        window = int(policy.threshold("flapping_window"))
        min_flips = int(policy.threshold("flapping_min_flips"))
        for node in nodes:
            item = loaded.pop(node.name)
            boot_time: float | None = None
            xid_ids: list[str] = []
            if item.doc is None:
                check, message = item.problem or ("collect.missing", "no node-local verdict")
                verdict = Verdict.unreachable(node.name, check, message)
            elif not isinstance(item.doc.get("facts"), dict):
                # the probe itself did not finish on the node: its own findings are all there is
                own = [Finding(str(f.get("check")), f.get("severity", "fail"), str(f.get("message")),
                               f.get("action", "none"))
                       for f in item.doc.get("findings") or [] if isinstance(f, dict)]
                verdict = Verdict.from_findings(node.name, [*own, _node_note(item.doc)])
            else:
                facts: dict[str, Any] = item.doc["facts"]
                all_facts[node.name] = facts
                boot = facts.get("boot_time")
                boot_time = float(boot) if isinstance(boot, int | float) else None
                view = history.view(node.name, boot_time, before_run=run_id) if history else None
                judged = checks.evaluate(node.name, facts, node.expected, policy, view)
                verdict = Verdict(judged.node, judged.verdict, judged.action,
                                  [*judged.findings, _node_note(item.doc)])
                if facts.get("xids"):  # reading the facts again only where there are XIDs to remember
                    xid_ids = checks.reported_xid_ids(facts, policy)
            if history is not None and run_id is not None:
                verdict = flag_flapping(history, node.name, verdict, window, min_flips, flapping)
                records.append((verdict, boot_time, xid_ids))
            verdicts.append(verdict)
            if on_node is not None:
                on_node(node.name)
        if history is not None and run_id is not None:
            history.record_many(run_id, records)
            history.finish_run(run_id)
    finally:
        if history is not None:
            history.close()
    info = RunInfo(stack=plan.site.stack, site=plan.site.name, level=LEVEL, started=started,
                   seconds=time.time() - started, flapping=flapping)
    return ValidateRun(verdicts, info, [name for name, _ in checks.CHECKS], run_id, all_facts)
