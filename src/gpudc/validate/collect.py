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
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from gpudc.errors import InputError
from gpudc.plan.types import Node, Plan
from gpudc.validate import checks
from gpudc.validate.facts import ProbeFacts, Reading, read_valid_facts
from gpudc.validate.fanout import FanOut, SshOptions, Target
from gpudc.validate.history import History, default_history_path
from gpudc.validate.node_health import FORMAT, STATE_DIR, VERSION
from gpudc.validate.policy import Policy, load_policy
from gpudc.validate.reports import RunInfo
from gpudc.validate.run import ValidateRun, flag_flapping, select_nodes
from gpudc.validate.types import Action, Finding, Verdict, VerdictName

#: Default age beyond which a node-local verdict is stale (Slurm's default HealthCheckInterval is
#: set by the site; three intervals of 5 minutes).
MAX_AGE_S = 900.0
LEVEL = "collect"
SSH_COMMAND = f"cat {STATE_DIR}/verdict.json"


class Loaded:
    """One node's verdict document, or why there is none; with its facts read against the
    schema when they were validated while parsing (None: evaluate reads them), and the document
    as it came (for the run's facts)."""

    __slots__ = ("doc", "problem", "raw", "reading")

    def __init__(self, doc: dict[str, Any] | None, problem: tuple[str, str] | None = None,
                 reading: Reading | None = None, raw: str | bytes | None = None) -> None:
        self.doc = doc
        self.problem = problem  # (check, message)
        self.reading = reading
        self.raw = raw


class NodeFacts(Mapping[str, dict[str, Any]]):
    """A collected run's facts, node -> the facts of its node-local verdict as the node wrote
    them. Each is kept as its document's text and parsed when first looked up: 25,000 nodes'
    facts as objects were over a gigabyte and a third of a collect's time, for a mapping that a
    caller reads a few nodes of, if any."""

    def __init__(self) -> None:
        self._raw: dict[str, str | bytes] = {}
        self._parsed: dict[str, dict[str, Any]] = {}

    def add(self, node: str, raw: str | bytes) -> None:
        self._raw[node] = raw
        self._parsed.pop(node, None)

    def __getitem__(self, node: str) -> dict[str, Any]:
        found = self._parsed.get(node)
        if found is None:
            facts: dict[str, Any] = json.loads(self._raw[node])["facts"]
            found = self._parsed[node] = facts
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, node: object) -> bool:
        return node in self._raw


@with_config(ConfigDict(extra="allow"))
class _Document(TypedDict):
    """A node-local verdict whose facts fit the facts schema; its other keys as JSON has them."""

    facts: ProbeFacts


#: parses a verdict and validates its facts in one pass (pydantic-core's JSON parser): a fifth
#: faster than json.loads and then validating the parsed facts, which was most of a collect's time
_DOCUMENT = TypeAdapter(_Document)


def _load(text: str | bytes) -> tuple[Any, Reading | None]:
    """The document, and its facts' Reading when they fit the schema as sent. Anything else
    (not JSON, no facts, facts that do not fit) is parsed by json and left to read_facts, which
    names and repairs what does not fit."""
    try:
        doc = _DOCUMENT.validate_json(text)
    except ValidationError:
        return json.loads(text), None
    return doc, read_valid_facts(doc["facts"])


def parse_verdict(text: str | bytes, node: str, now: float, max_age_s: float) -> Loaded:
    """A node-local verdict document, checked for format, node name and age."""
    try:
        doc, reading = _load(text)
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
    return Loaded(doc, reading=reading, raw=text)


def _from_dir(folder: Path, nodes: list[Node], now: float, max_age_s: float) -> Iterator[tuple[str, Loaded]]:
    """Each node's verdict, read and parsed as the caller judges it (one document in memory at
    a time). No threads: parsing holds the GIL, and a spool folder is local or a mounted file
    system whose reads are short (a thread pool here cost more in lock hand-offs than it saved);
    many nodes are shared among worker processes instead (_work)."""
    base = str(folder)
    for node in nodes:
        name = node.name
        for path in (f"{base}/{name}.json", f"{base}/{name}/verdict.json"):
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except FileNotFoundError:
                continue
            except OSError as exc:
                yield name, Loaded(None, ("collect.unreadable", f"{path}: {exc.strerror}"))
                break
            yield name, parse_verdict(data, name, now, max_age_s)
            break
        else:
            yield name, Loaded(None, ("collect.missing", f"no node-local verdict in {folder}"))


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
    """Parsing thousands of verdict documents makes millions of dicts and lists: the cyclic
    collector's passes over them cost a third of the time and free nothing (a JSON document has
    no cycles). Reference counting still frees."""
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
    workers: int | None = None,
) -> ValidateRun:
    """Judge the latest node-local verdicts of the selected nodes and record them as one run.

    `source`: a spool folder; else `ssh` reads each node's file over the fan-out (no probe).
    `workers`: processes that read, parse and judge a spool folder's verdicts side by side
    (None: one per CPU, at most MAX_WORKERS, from PARALLEL_MIN nodes on; 1: all in this
    process). The run, its verdicts, its facts (NodeFacts) and its history rows are the same
    either way."""
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
    if workers is None:
        workers = min(_cpus(), MAX_WORKERS) if len(nodes) >= PARALLEL_MIN else 1
    with _no_cyclic_gc():
        return _collect(plan, nodes, policy, source, ssh, addresses or {}, history_path, record_history, max_age_s,
                        started, now, on_node, max(1, workers))


#: from this many nodes on, a spool folder is judged by one process per CPU
PARALLEL_MIN = 1000
#: at most this many by default: beyond, this process (recording, gathering) sets the pace
MAX_WORKERS = 8
#: nodes per task handed to a worker process
_CHUNK = 500


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _Judge:
    """Judges one node's loaded verdict: the work that is the same in this process and in a
    worker (which opens its own connection to the history, reading only)."""

    def __init__(self, policy: Policy, history: History | None, run_id: int | None) -> None:
        self.policy = policy
        self.history = history if run_id is not None else None
        self.run_id = run_id
        self.window = int(policy.threshold("flapping_window"))
        self.min_flips = int(policy.threshold("flapping_min_flips"))

    def __call__(self, node: Node, item: Loaded) -> tuple[Verdict, float | None, list[str], int,
                                                           str | bytes | None]:
        """(verdict, boot time, XID ids to remember, flips when flapping else 0, the document
        whose facts were judged)."""
        history = self.history
        boot_time: float | None = None
        xid_ids: list[str] = []
        raw: str | bytes | None = None
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
            raw = item.raw if item.raw is not None else json.dumps(item.doc)
            boot = facts.get("boot_time")
            boot_time = float(boot) if isinstance(boot, int | float) else None
            view = history.view(node.name, boot_time, before_run=self.run_id) if history else None
            judged = checks.evaluate(node.name, facts, node.expected, self.policy, view, item.reading)
            verdict = Verdict(judged.node, judged.verdict, judged.action,
                              [*judged.findings, _node_note(item.doc)])
            if facts.get("xids"):  # reading the facts again only where there are XIDs to remember
                xid_ids = checks.reported_xid_ids(facts, self.policy, item.reading)
        flips = 0
        if history is not None:
            found: dict[str, int] = {}
            verdict = flag_flapping(history, node.name, verdict, self.window, self.min_flips, found)
            flips = found.get(node.name, 0)
        return verdict, boot_time, xid_ids, flips, raw


# -- worker processes --------------------------------------------------------------------------
# Forked before the history is opened; each task is a slice of the nodes. A worker sends back
# plain tuples (a Finding's fields), cheaper to pickle than dataclasses, and the document whose
# facts it judged as it read it.

_Result = tuple[str, tuple[str, VerdictName, Action, list[tuple[Any, ...]]], float | None, list[str], int,
                str | bytes | None]
#: (nodes, folder, now, max_age_s, policy, history path or None), set before forking
_WORK: tuple[list[Node], Path, float, float, Policy, Path | None] | None = None


def _work(task: tuple[int, int, int | None]) -> list[_Result]:
    assert _WORK is not None
    nodes, folder, now, max_age_s, policy, history_path = _WORK
    first, last, run_id = task
    history = History(history_path) if history_path is not None and run_id is not None else None
    try:
        judge = _Judge(policy, history, run_id)
        out: list[_Result] = []
        part = nodes[first:last]
        for node, (_, item) in zip(part, _from_dir(folder, part, now, max_age_s), strict=True):
            verdict, boot_time, xid_ids, flips, raw = judge(node, item)
            findings = [(f.check, f.severity, f.message, f.action, f.gpu, f.evidence, f.value, f.floor, f.unit)
                        for f in verdict.findings]
            out.append((node.name, (verdict.node, verdict.verdict, verdict.action, findings), boot_time, xid_ids,
                        flips, raw))
        return out
    finally:
        if history is not None:
            history.close()


def _start_workers(count: int, work: tuple[list[Node], Path, float, float, Policy, Path | None]
                   ) -> ProcessPoolExecutor | None:
    """`count` worker processes forked now (before this process opens the history) with `work`
    as their _WORK; None where processes cannot be forked (then all is judged here)."""
    global _WORK
    if "fork" not in multiprocessing.get_all_start_methods():
        return None
    _WORK = work
    try:
        pool = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("fork"))
        try:
            pool.submit(os.getpid).result()  # forks every worker (the fork context starts them all at once)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    except OSError:
        return None
    finally:
        _WORK = None
    return pool


def _in_workers(pool: ProcessPoolExecutor, nodes: list[Node], run_id: int | None) -> Iterator[tuple[
        Verdict, float | None, list[str], int, str | bytes | None]]:
    """Each node's judgement from the workers, in node order (a worker that dies raises
    BrokenProcessPool here rather than leaving the run waiting)."""
    tasks = [(i, min(i + _CHUNK, len(nodes)), run_id) for i in range(0, len(nodes), _CHUNK)]
    for results in pool.map(_work, tasks):
        for _, (node, verdict, action, findings), boot_time, xid_ids, flips, raw in results:
            yield Verdict(node, verdict, action, [Finding(*f) for f in findings]), boot_time, xid_ids, flips, raw


@contextlib.contextmanager
def _nowhere() -> Iterator[Callable[[list[tuple[Verdict, float | None, list[str]]]], None]]:
    """A run recorded nowhere (no history)."""
    yield lambda _: None


def _collect(plan: Plan, nodes: list[Node], policy: Policy, source: Path | None, ssh: SshOptions | None,
             addresses: Mapping[str, str], history_path: Path | None, record_history: bool, max_age_s: float,
             started: float, now: float, on_node: Callable[[str], None] | None, workers: int) -> ValidateRun:
    path = (history_path or default_history_path()) if record_history else None
    pool: ProcessPoolExecutor | None = None
    loaded: Iterator[tuple[str, Loaded]] | None = None
    if source is not None and workers > 1 and len(nodes) > _CHUNK:
        pool = _start_workers(min(workers, -(-len(nodes) // _CHUNK)), (nodes, source, now, max_age_s, policy, path))
    if pool is None and source is not None:
        loaded = _from_dir(source, nodes, now, max_age_s)
    elif pool is None:
        assert ssh is not None
        fetched = _over_ssh(ssh, nodes, addresses, now, max_age_s)
        loaded = ((n.name, fetched.pop(n.name)) for n in nodes)
    verdicts: list[Verdict] = []
    all_facts = NodeFacts()
    flapping: dict[str, int] = {}
    run_id: int | None = None
    records: list[tuple[Verdict, float | None, list[str]]] = []
    history: History | None = None
    try:
        history = History(path) if path is not None else None
        if history is not None:
            history.connection.execute("PRAGMA synchronous=NORMAL")
            run_id = history.start_run(plan.site.stack, plan.site.name, LEVEL, len(nodes))
        if pool is not None:
            judged = _in_workers(pool, nodes, run_id)
        else:
            assert loaded is not None
            judge = _Judge(policy, history, run_id)
            judged = (judge(node, item) for node, (_, item) in zip(nodes, loaded, strict=True))
        # the whole run is recorded in one transaction: a killed collect leaves an unfinished run
        # without verdicts, never half of one. Judged here, its rows go in at the end (this
        # connection reads the nodes' past meanwhile); judged by workers (their own connections,
        # which do not see the open transaction), part by part while they judge the rest.
        with history.recording(run_id) if history is not None and run_id is not None else _nowhere() as record:
            for node, (verdict, boot_time, xid_ids, flips, raw) in zip(nodes, judged, strict=True):
                if raw is not None:
                    all_facts.add(node.name, raw)
                if flips:
                    flapping[node.name] = flips
                records.append((verdict, boot_time, xid_ids))
                if pool is not None and len(records) >= _CHUNK:
                    record(records)
                    records = []
                verdicts.append(verdict)
                if on_node is not None:
                    on_node(node.name)
            record(records)
        if history is not None and run_id is not None:
            history.finish_run(run_id)
    finally:
        if pool is not None:  # the workers are idle by now, or finish the part they have and end
            pool.shutdown(wait=True, cancel_futures=True)
        if history is not None:
            history.close()
    info = RunInfo(stack=plan.site.stack, site=plan.site.name, level=LEVEL, started=started,
                   seconds=time.time() - started, flapping=flapping)
    return ValidateRun(verdicts, info, [name for name, _ in checks.CHECKS], run_id, all_facts)
