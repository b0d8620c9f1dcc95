"""Taking a node out of service and putting it back: Slurm, or a drain list file.

- `SlurmDrainer`: through Slurm's `scontrol`, when the site runs Slurm (`plan.site.has_slurm`):
  `scontrol update NodeName=N State=DRAIN Reason="gpudc: ..."`, then a bounded wait until the
  node's running jobs have ended (DRAINING -> DRAINED; `force` requeues them instead), and
  `State=RESUME` followed by a bounded wait until slurmctld has the node back (not drained, not
  down, answering). Slurm refuses to resume a node whose slurmd registered other resources than
  slurm.conf gives it (INVALID_REG: "gres/gpu count reported lower than configured"), and a
  registration is only made again when slurmd starts; so a resume first waits (bounded) for a valid
  registration, and `wait_registered` waits for the one after a slurmd restart (the reprovision
  workflow restarts slurmd on the node before it resumes). A node not out of service is left as it
  is (Slurm answers "Invalid node state specified" to resuming one). Its client commands run on PATH or behind the site's `gpudc:slurm.client`
  prefix (`ssh root@slurmctld-01`, the lab's wrapper).
- `FileDrainer`: a drain list file for sites without a scheduler: `<state dir>/<site>/drained-nodes`,
  one node a line, `NODE<TAB>SINCE (UTC ISO 8601)<TAB>REASON`, lines starting with `#` are
  comments. Updated atomically under a lock, so concurrent commands never lose each other's lines.

Both raise `DrainError` with a one-line message when they cannot do their job; every external
command has a timeout.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gpudc.errors import GpudcError
from gpudc.files import write_atomic
from gpudc.model.site import check_label
from gpudc.plan.types import Plan
from gpudc.project import site_state_dir

DRAIN_FILE = "drained-nodes"
#: Reasons gpudc gives on its own (no `--reason`): the drain reason then names the finding.
GENERIC_REASONS = frozenset({"", "reprovision", "validate --reprovision-failed"})
REASON_PREFIX = "gpudc: "
_MAX_REASON = 200

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


class DrainError(GpudcError):
    """The scheduler refused or could not be asked to drain/resume a node."""

    exit_code = 1


class Drainer(Protocol):
    name: str

    def drain(self, node: str, reason: str) -> None: ...

    def wait_drained(self, node: str, timeout: float, say: Say = _quiet) -> str:
        """Wait (bounded) until nothing runs on the node any more; a line saying what happened."""
        ...

    def resume(self, node: str) -> None: ...

    def wait_resumed(self, node: str, timeout: float) -> str:
        """Wait (bounded) until the scheduler has the node back in service; what it saw."""
        ...

    def is_drained(self, node: str) -> bool | None:
        """True/False when known, None when the backend cannot tell."""
        ...

    def current_reason(self, node: str) -> str | None:
        """Why the node is drained now (by anyone), when it is and the backend can tell."""
        ...


def clean_reason(reason: str) -> str:
    """`gpudc: <reason>` on one line, printable, without quotes that could break a command line."""
    text = " ".join(reason.replace('"', "'").split())
    text = "".join(ch for ch in text if ch.isprintable())
    if not text.startswith(REASON_PREFIX):
        text = REASON_PREFIX + text
    return text[:_MAX_REASON]


#: Base states of a node that still runs (or is finishing) jobs.
_BUSY = {"ALLOCATED", "MIXED", "COMPLETING"}
#: States in which a node is not in service even without the DRAIN flag.
_OUT = {"DOWN", "NOT_RESPONDING", "FAIL", "FAILING", "MAINTENANCE", "REBOOT_REQUESTED", "REBOOT_ISSUED",
        "POWERED_DOWN", "POWERING_DOWN", "POWERING_UP", "INVALID_REG", "UNKNOWN", "FUTURE"}


@dataclass(frozen=True, slots=True)
class NodeState:
    """What slurmctld says of a node (`scontrol --oneliner show node`)."""

    state: str  # IDLE, MIXED+DRAIN, DOWN+DRAIN+NOT_RESPONDING ...
    reason: str
    slurmd_start: str = ""  # SlurmdStartTime: when the node's slurmd last started (registered)

    @property
    def flags(self) -> set[str]:
        return set(self.state.upper().rstrip("*~#!%$@^-").split("+"))

    @property
    def draining(self) -> bool:
        return "DRAIN" in self.flags and bool(self.flags & _BUSY)

    @property
    def drained(self) -> bool:
        return "DRAIN" in self.flags and not self.flags & _BUSY

    @property
    def invalid_registration(self) -> bool:
        """slurmd registered other resources than configured: Slurm will not resume the node."""
        return "INVALID_REG" in self.flags

    @property
    def out_of_service(self) -> bool:
        """A state that `State=RESUME` applies to (drained, down or failed)."""
        return bool(self.flags & {"DRAIN", "DOWN", "FAIL", "FAILING"})

    @property
    def in_service(self) -> bool:
        return "DRAIN" not in self.flags and not self.flags & _OUT and not self.state.endswith("*")

    @classmethod
    def parse(cls, text: str) -> NodeState:
        state = next((w.split("=", 1)[1] for w in text.split() if w.startswith("State=")), "")
        reason = ""
        if " Reason=" in f" {text}":
            reason = f" {text}".split(" Reason=", 1)[1].strip()
            reason = reason.split(" Comment=", 1)[0].rsplit(" [", 1)[0].strip()
            if reason == "(null)":
                reason = ""
        start = next((w.split("=", 1)[1] for w in text.split() if w.startswith("SlurmdStartTime=")), "")
        return cls(state, reason, "" if start in ("None", "(null)") else start)


class SlurmDrainer:
    """Drain and resume through Slurm (a node's plan name is its Slurm NodeName).

    `client`: the command prefix that reaches the cluster (empty: the clients on PATH). `force`:
    requeue the jobs of a draining node instead of waiting for them to end."""

    name = "slurm"

    def __init__(self, scontrol: str = "scontrol", timeout: float = 30.0, *, client: Sequence[str] = (),
                 force: bool = False, poll_s: float = 1.0, register_timeout: float = 30.0) -> None:
        self.scontrol = scontrol
        self.client = list(client)
        self.timeout = timeout
        self.force = force
        self.poll_s = poll_s
        self.register_timeout = register_timeout  # how long resume waits for a valid registration
        self.before: dict[str, str] = {}  # node -> its state before gpudc drained it

    def _tool(self, name: str) -> list[str]:
        if name == "scontrol":
            return [*self.client, self.scontrol]
        return [*self.client, str(Path(self.scontrol).with_name(name)) if "/" in self.scontrol else name]

    def drain_argv(self, node: str, reason: str) -> list[str]:
        check_label(node)
        return [*self._tool("scontrol"), "update", f"NodeName={node}", "State=DRAIN",
                f"Reason={clean_reason(reason)}"]

    def resume_argv(self, node: str) -> list[str]:
        check_label(node)
        return [*self._tool("scontrol"), "update", f"NodeName={node}", "State=RESUME"]

    def show_argv(self, node: str) -> list[str]:
        check_label(node)
        return [*self._tool("scontrol"), "--oneliner", "show", "node", node]

    def jobs_argv(self, node: str) -> list[str]:
        check_label(node)
        return [*self._tool("squeue"), "--noheader", "--nodelist", node, "--states", "RUNNING,COMPLETING,SUSPENDED",
                "--format", "%i"]

    def _run(self, argv: Sequence[str], what: str) -> str:
        try:
            proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise DrainError(f"slurm: {what}: `{argv[0]}` is not installed") from None
        except subprocess.TimeoutExpired:
            raise DrainError(f"slurm: {what}: {shlex.join(argv[:2])} did not answer within {self.timeout:g}s") from None
        if proc.returncode != 0:
            why = (proc.stderr or proc.stdout).strip().splitlines()
            raise DrainError(f"slurm: {what}: scontrol exit {proc.returncode}: {why[-1][:300] if why else ''}")
        return proc.stdout

    def state(self, node: str) -> NodeState:
        return NodeState.parse(self._run(self.show_argv(node), f"show {node}"))

    def jobs(self, node: str) -> list[str]:
        out = self._run(self.jobs_argv(node), f"jobs on {node}")
        return [line.strip() for line in out.splitlines() if line.strip()]

    def drain(self, node: str, reason: str) -> None:
        with contextlib.suppress(DrainError):
            self.before.setdefault(node, self.state(node).state)
        self._run(self.drain_argv(node, reason), f"drain {node}")

    def wait_drained(self, node: str, timeout: float, say: Say = _quiet) -> str:
        """Until the node is DRAINED (its jobs ended, or requeued with `force`); DrainError when the
        jobs still run at the deadline (the node stays draining: nothing new starts on it)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        before = self.before.get(node, "?")
        requeued: list[str] = []
        told: set[str] = set()
        while True:
            now = self.state(node)
            if now.drained:
                waited = time.monotonic() - t0
                tail = f", requeued job(s) {', '.join(requeued)}" if requeued else ""
                return f"slurmctld: {before} -> {now.state} after {waited:.1f}s{tail}"
            if not now.draining and "DRAIN" not in now.flags:
                raise DrainError(f"slurm: {node}: state {now.state}: the drain did not take")
            jobs = self.jobs(node)
            if self.force and jobs:
                for job in jobs:
                    if job not in requeued:
                        self._run([*self._tool("scontrol"), "requeue", job], f"requeue job {job} on {node}")
                        requeued.append(job)
                        say(f"{node}: requeued job {job} (--force)")
            elif jobs and ",".join(jobs) not in told:
                told.add(",".join(jobs))
                say(f"{node}: {now.state}: waiting for job(s) {', '.join(jobs)} to end "
                    f"(up to {max(0.0, deadline - time.monotonic()):.0f}s; --force requeues them)")
            if time.monotonic() + self.poll_s > deadline:
                raise DrainError(f"slurm: {node} still {now.state} after {timeout:g}s: job(s) "
                                 f"{', '.join(jobs) or '?'} running; wait longer or requeue them (--force)")
            time.sleep(self.poll_s)

    def wait_registered(self, node: str, timeout: float, after: str | None = None) -> str:
        """Until slurmctld holds a valid registration of the node's slurmd (no INVALID_REG, answering),
        made after slurmd start time `after` when given (the restart that asked for it); DrainError,
        naming slurmctld's reason, when none comes within `timeout`."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            now = self.state(node)
            fresh = after is None or (now.slurmd_start and now.slurmd_start != after)
            answering = "NOT_RESPONDING" not in now.flags and not now.state.endswith("*")
            if fresh and answering and not now.invalid_registration:
                return (f"slurmd registered ({now.state}, started {now.slurmd_start or '?'}) "
                        f"after {time.monotonic() - t0:.1f}s")
            if time.monotonic() + self.poll_s > deadline:
                if now.invalid_registration:
                    raise DrainError(
                        f"slurm: {node}: slurmctld still holds an invalid registration after {timeout:g}s "
                        f"({now.state}: {now.reason or 'no reason given'}); Slurm resumes the node only once its "
                        "slurmd registers the resources slurm.conf gives it (fix the node or gres.conf, restart slurmd)")
                what = "no new registration" if not fresh else "slurmd not answering"
                raise DrainError(f"slurm: {node}: {what} within {timeout:g}s (state {now.state}, slurmd started "
                                 f"{now.slurmd_start or '?'})")
            time.sleep(self.poll_s)

    def resume(self, node: str) -> None:
        """`State=RESUME` once slurmctld holds a valid registration (bounded by `register_timeout`);
        nothing to do for a node that is not drained, down or failed."""
        now = self.state(node)
        self.before[node] = now.state
        if now.invalid_registration:
            self.wait_registered(node, self.register_timeout)
            now = self.state(node)
        if not now.out_of_service:
            return
        self._run(self.resume_argv(node), f"resume {node}")

    def wait_resumed(self, node: str, timeout: float) -> str:
        """Until slurmctld has the node in service (slurmd answering, no DRAIN, not DOWN)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        before = self.before.get(node, "?")
        while True:
            now = self.state(node)
            if now.in_service:
                return f"slurmctld: {before} -> {now.state} after {time.monotonic() - t0:.1f}s"
            if time.monotonic() + self.poll_s > deadline:
                raise DrainError(f"slurm: {node} is {now.state} {timeout:g}s after its resume "
                                 f"(slurmd not answering?){': ' + now.reason if now.reason else ''}")
            time.sleep(self.poll_s)

    def is_drained(self, node: str) -> bool | None:
        try:
            state = self.state(node)
        except DrainError:
            return None
        return "DRAIN" in state.flags if state.state else None

    def current_reason(self, node: str) -> str | None:
        try:
            state = self.state(node)
        except DrainError:
            return None
        return state.reason if "DRAIN" in state.flags and state.reason else None


class FileDrainer:
    """The drain list file (see the module doc)."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_site(cls, site: str) -> FileDrainer:
        root = site_state_dir(site)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(root / DRAIN_FILE)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise DrainError(f"{self.path}: locked by another command for 30 s") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)

    def entries(self) -> dict[str, tuple[str, str]]:
        """node -> (since, reason)."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise DrainError(f"{self.path}: cannot read: {exc.strerror}") from None
        out: dict[str, tuple[str, str]] = {}
        for line in lines:
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t", 2)
            node = parts[0].strip()
            since = parts[1].strip() if len(parts) > 1 else ""
            reason = parts[2].strip() if len(parts) > 2 else ""
            out[node] = (since, reason)
        return out

    def _write(self, entries: dict[str, tuple[str, str]]) -> None:
        header = "# nodes gpudc took out of service: NODE<TAB>SINCE (UTC)<TAB>REASON\n"
        body = "".join(f"{n}\t{s}\t{r}\n" for n, (s, r) in sorted(entries.items()))
        write_atomic(self.path, header + body)

    def drain(self, node: str, reason: str) -> None:
        check_label(node)
        with self._locked():
            entries = self.entries()
            since = entries.get(node, (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), ""))[0]
            entries[node] = (since, clean_reason(reason))
            self._write(entries)

    def resume(self, node: str) -> None:
        check_label(node)
        with self._locked():
            entries = self.entries()
            if entries.pop(node, None) is not None:
                self._write(entries)

    def is_drained(self, node: str) -> bool | None:
        return node in self.entries()

    def wait_drained(self, node: str, timeout: float, say: Say = _quiet) -> str:
        return ""  # no scheduler: no job to wait for

    def wait_resumed(self, node: str, timeout: float) -> str:
        return ""

    def current_reason(self, node: str) -> str | None:
        entry = self.entries().get(node)
        return entry[1] if entry else None


def drainer_for(plan: Plan, *, scontrol: str | None = None, force: bool = False) -> Drainer:
    """Slurm when the site runs it and its clients are reachable (the stack's `gpudc:slurm.client`
    prefix, or `scontrol` on PATH); the drain list file otherwise."""
    if plan.site.has_slurm:
        client = _slurm_client(plan)
        if client:
            return SlurmDrainer(scontrol or "scontrol", client=client, force=force)
        found = scontrol or shutil.which("scontrol")
        if found:
            return SlurmDrainer(found, force=force)
    return FileDrainer.for_site(plan.site.name)


def _slurm_client(plan: Plan) -> list[str]:
    """The stack's `gpudc:slurm.client` command prefix, split ([] when unset or unreadable)."""
    from gpudc.model import load_site

    try:
        site, _ = load_site(plan.site.stack)
    except GpudcError:
        return []
    if site.slurm is None or not site.slurm.client:
        return []
    return shlex.split(site.slurm.client)


def drain_reason(node: str, base: str, drainer: Drainer, history: Path | None = None) -> str:
    """The drain reason: `base` plus the finding that asks for it: the reason the node is drained
    with already (gpudc-probe's, or an operator's), else the first failure of its latest verdict.
    A reason the operator wrote (`--reason`) is taken as it is."""
    if base.strip() not in GENERIC_REASONS:
        return clean_reason(base)
    finding = None
    with contextlib.suppress(GpudcError, OSError):
        current = drainer.current_reason(node)
        if current and not current.startswith(REASON_PREFIX):
            finding = current
    if finding is None:
        with contextlib.suppress(GpudcError, OSError):
            from gpudc.validate.history import History, default_history_path

            path = history or default_history_path()
            if path.exists():
                with History(path) as db:
                    past = db.node_history(node, limit=1)
                if past and past[0].verdict in ("fail", "unreachable"):
                    fail = next((f for f in past[0].findings if f.severity == "fail"), None)
                    if fail is not None:
                        finding = f"{fail.check}: {fail.message}"
    base = base.strip() or "reprovision"
    return clean_reason(f"{base}: {finding}" if finding and finding not in base else base)
