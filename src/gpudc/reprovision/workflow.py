"""Reprovision failed nodes: drain -> one-time PXE + power cycle -> SSH with the pre-seeded host
key -> `reprovision.yml` -> validate (standard) -> resume, or leave drained with the verdict's action.

    outcomes = reprovision_nodes(plan, ["gb200-01"], reason="xid 79")

The engine (`reprovision_nodes`) takes its outside world as `Backends` (a BMC factory, an SSH
waiter, a provisioner, a validator, a drainer), so it can run against the real lab or against
other real local pieces in tests; `site_backends(plan)` builds the real ones for a site.

Every step has a timeout (`Timeouts`) and is recorded in the node's state file
(`gpudc.reprovision.state`) before and after it runs; a re-run of an unfinished run continues
from its first step not done. Never more than one node of an NVL72 domain is worked on at once,
also across concurrent commands (a `flock` per domain); `max_parallel` bounds the rest. A
node's failure never stops the others, and nodes not named are never touched.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from rich.console import Console

from gpudc.errors import GpudcError, InputError, UnreachableError
from gpudc.plan.types import Node, Plan
from gpudc.reprovision.drain import Drainer, DrainError, SlurmDrainer, clean_reason, drain_reason, drainer_for
from gpudc.reprovision.state import STEPS, FileLock, NodeRun, StateStore
from gpudc.validate.types import Finding, Verdict

if TYPE_CHECKING:
    from gpudc.access import SiteAccess

T = TypeVar("T")

#: Validation level the workflow proves a node healthy with.
VALIDATE_LEVEL = "standard"
#: Actions that `validate --reprovision-failed` hands to this workflow (see `nodes_to_reprovision`).
REPROVISION_ACTIONS = frozenset({"reboot", "reprovision"})


#: seconds before the provision step's timeout at which its ansible-playbook is stopped
PROVISION_STOP_MARGIN_S = 10.0


class StepError(GpudcError):
    """A step could not complete. exit_code 1 (it failed) or 3 (something was unreachable)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StepTimeout(StepError):
    def __init__(self, step: str, timeout: float) -> None:
        super().__init__(f"{step}: did not finish within {timeout:g}s", exit_code=3)


@dataclass(slots=True)
class Timeouts:
    """Seconds each step may take (and how long a node may wait for its domain/node lock)."""

    check: float = 30.0
    drain: float = 60.0
    reimage: float = 600.0
    wait_ssh: float = 600.0
    provision: float = 1800.0
    validate: float = 900.0
    resume: float = 60.0
    lock_wait: float = 7200.0

    def of(self, step: str) -> float:
        return float(getattr(self, step))

    def __post_init__(self) -> None:
        bad = [f"timeout {n}: {getattr(self, n)} must be positive" for n in (*STEPS, "lock_wait")
               if getattr(self, n) <= 0]
        if bad:
            raise InputError(bad)


class Bmc(Protocol):
    """What the workflow needs of a BMC (gpudc.infra.redfish.BmcClient has it)."""

    def power_state(self) -> str: ...

    def reset(self, reset_type: str) -> None: ...

    def wait_power_state(self, state: str, timeout: float, interval: float = 1.0) -> str: ...

    def set_boot_override(self, target: str, enabled: str = "Once", mode: str | None = None) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class Backends:
    """The outside world of the workflow; each callable gets the node and its step's timeout."""

    drainer: Drainer
    bmc: Callable[[Node], Bmc]
    wait_ssh: Callable[[Node, float], str]  # -> detail; StepError when it does not come up
    provision: Callable[[Node, float], str]  # -> detail; StepError when the play fails
    validate: Callable[[Node, float], Verdict]
    #: Before a healthy node is resumed: have the scheduler's node agent register the node afresh
    #: (Slurm: restart slurmd, wait for slurmctld to take its registration); -> detail.
    register: Callable[[Node, float], str] | None = None


@dataclass(slots=True)
class NodeOutcome:
    node: str
    status: str  # resumed | kept-drained | drained | error
    exit_code: int
    verdict: str | None = None
    action: str | None = None
    message: str = ""
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)
    run: int = 0
    resumed_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "status": self.status,
            "exit_code": self.exit_code,
            "verdict": self.verdict,
            "action": self.action,
            "message": self.message,
            "seconds": round(self.seconds, 2),
            "steps": {k: round(v, 2) for k, v in self.step_seconds.items()},
            "run": self.run,
            "resumed_from": self.resumed_from,
        }


Reporter = Callable[[str, str, str, str], None]  # node, step, status, detail


def console_reporter(console: Console | None = None) -> Reporter:
    """Each step's start and end, with the time since the command began, on stderr."""
    out = console or Console(stderr=True)
    t0 = time.monotonic()
    lock = threading.Lock()
    styles = {"done": "green", "failed": "bold red", "skip": "dim", "wait": "yellow", "start": "cyan",
              "drained": "bold yellow", "resumed": "bold green"}

    def report(node: str, step: str, status: str, detail: str) -> None:
        style = styles.get(status, "")
        with lock:
            out.print(
                f"[dim]{time.monotonic() - t0:7.1f}s[/] {node:<12} {step:<10} [{style}]{status:<8}[/] {detail}",
                highlight=False,
                soft_wrap=True,
            )

    return report


def exit_code(outcomes: Sequence[NodeOutcome]) -> int:
    """0 every node back in service; 1 some node failed (1 wins); 3 something was unreachable."""
    codes = {o.exit_code for o in outcomes}
    if 1 in codes:
        return 1
    if 3 in codes:
        return 3
    return max(codes, default=0)


def nodes_to_reprovision(verdicts: Sequence[Verdict]) -> list[str]:
    """Nodes a validation run hands to the workflow: action reprovision, or reboot (reimage includes it)."""
    return [v.node for v in verdicts if v.verdict == "fail" and v.action in REPROVISION_ACTIONS]


def _bounded(step: str, timeout: float, fn: Callable[[], T]) -> T:
    """fn() in a helper thread; StepTimeout if it runs past `timeout` (the thread is abandoned)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"gpudc-reprovision-{step}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise StepTimeout(step, timeout)
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def _first_failure(verdict: Verdict) -> str:
    for severity in ("fail", "warn"):
        for f in verdict.findings:
            if f.severity == severity:
                return f.message
    return verdict.verdict


class _Worker:
    """Runs the steps of one node."""

    def __init__(
        self, plan: Plan, node: Node, backends: Backends, store: StateStore, timeouts: Timeouts,
        reason: str, keep_drained: bool, report: Reporter,
    ) -> None:
        self.plan = plan
        self.node = node
        self.b = backends
        self.store = store
        self.t = timeouts
        self.reason = reason
        self.keep_drained = keep_drained
        self.report = report
        self.verdict: Verdict | None = None

    # -- steps --------------------------------------------------------------------------------

    def step_check(self, run: NodeRun, timeout: float) -> str:
        try:
            node = self.plan.node(self.node.name)
        except KeyError:
            raise StepError(f"{self.node.name}: not in the plan of stack {self.plan.site.stack}", 2) from None
        where = f"rack {node.rack}"
        if node.nvlink_domain:
            where += f", NVL72 domain {node.nvlink_domain}"
        return f"in the plan ({node.sku}, {where}, BMC {node.bmc_address})"

    def step_drain(self, run: NodeRun, timeout: float) -> str:
        t0 = time.monotonic()
        name = self.node.name
        # the reason names the finding: the one the node is drained with already, or its last verdict's
        reason = drain_reason(name, run.reason or self.reason, self.b.drainer)
        try:
            self.b.drainer.drain(name, reason)
            # bounded: running jobs end (or are requeued with --force) before the node is reimaged
            waited = self.b.drainer.wait_drained(
                name, max(1.0, timeout - (time.monotonic() - t0) - 1.0),
                lambda msg: self.report(name, "drain", "wait", msg))
        except DrainError as exc:
            raise StepError(str(exc)) from None
        run.drain_backend = self.b.drainer.name
        return f"{self.b.drainer.name}: {reason}" + (f"; {waited}" if waited else "")

    def step_reimage(self, run: NodeRun, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        bmc = self.b.bmc(self.node)
        try:
            bmc.set_boot_override("Pxe", "Once")
            before = bmc.power_state()
            reset = "ForceRestart" if before == "On" else "On"
            bmc.reset(reset)
            bmc.wait_power_state("On", timeout=max(1.0, deadline - time.monotonic()), interval=1.0)
        finally:
            with contextlib.suppress(Exception):
                bmc.close()
        return f"one-time PXE boot, power {before} -> {reset} -> On"

    def step_wait_ssh(self, run: NodeRun, timeout: float) -> str:
        return self.b.wait_ssh(self.node, timeout)

    def step_provision(self, run: NodeRun, timeout: float) -> str:
        return self.b.provision(self.node, timeout)

    def step_validate(self, run: NodeRun, timeout: float) -> str:
        verdict = self.b.validate(self.node, timeout)
        self.verdict = verdict
        run.verdict = verdict.to_dict()
        run.action = verdict.action
        if verdict.verdict == "pass":
            return "pass"
        return f"{verdict.verdict}, action {verdict.action}: {_first_failure(verdict)}"

    def step_resume(self, run: NodeRun, timeout: float) -> str:
        verdict = self._recorded_verdict(run)
        if verdict.verdict == "pass":
            if self.keep_drained:
                return "healthy; left drained (--keep-drained)"
            t0 = time.monotonic()
            registered = ""
            try:
                if self.b.register is not None:
                    # the reimaged node's own resources (its GPUs), not what its slurmd saw before
                    registered = self.b.register(self.node, max(1.0, timeout / 2))
                self.b.drainer.resume(self.node.name)
                seen = self.b.drainer.wait_resumed(self.node.name,
                                                   max(1.0, timeout - (time.monotonic() - t0) - 1.0))
            except DrainError as exc:
                raise StepError(str(exc)) from None
            seen = "; ".join(x for x in (registered, seen) if x)
            return f"healthy; back in service ({self.b.drainer.name}{': ' + seen if seen else ''})"
        reason = clean_reason(f"{verdict.action}: {_first_failure(verdict)}")
        try:
            self.b.drainer.drain(self.node.name, reason)
        except DrainError as exc:
            raise StepError(str(exc)) from None
        return f"left drained, action {verdict.action} ({reason})"

    def _recorded_verdict(self, run: NodeRun) -> Verdict:
        if self.verdict is not None:
            return self.verdict
        data = run.verdict or {}
        findings = [Finding(**f) for f in data.get("findings", [])]
        return Verdict(str(data.get("node", self.node.name)), data.get("verdict", "fail"),
                       data.get("action", "none"), findings)

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> NodeOutcome:
        name = self.node.name
        started = time.monotonic()
        run, resumed = self.store.begin(name, self.plan.site.name, self.reason)
        resumed_from = run.resume_point() if resumed else None
        if resumed:
            self.report(name, "run", "start", f"continuing run {run.run} at {resumed_from} "
                                              f"(last completed: {run.last_done() or 'none'})")
        else:
            self.report(name, "run", "start", f"run {run.run}: {clean_reason(run.reason)}")
        self.store.event(run, "run-start", resumed=resumed, resumed_from=resumed_from, pid=os.getpid())
        steps: dict[str, Callable[[NodeRun, float], str]] = {
            "check": self.step_check,
            "drain": self.step_drain,
            "reimage": self.step_reimage,
            "wait_ssh": self.step_wait_ssh,
            "provision": self.step_provision,
            "validate": self.step_validate,
            "resume": self.step_resume,
        }
        for step in STEPS:
            record = run.steps[step]
            if record.status == "done":
                self.report(name, step, "skip", f"done earlier ({record.detail})")
                continue
            record.status = "running"
            record.started = time.time()
            record.finished = None
            record.attempts += 1
            self.store.save(run)
            self.store.event(run, "step-start", step=step)
            self.report(name, step, "start", "")
            t0 = time.monotonic()
            timeout = self.t.of(step)
            try:
                detail = _bounded(step, timeout, functools.partial(steps[step], run, timeout))
            except (GpudcError, OSError) as exc:
                code = exc.exit_code if isinstance(exc, GpudcError) else 1
                if isinstance(exc, UnreachableError):
                    code = 3
                return self._fail(run, step, t0, exc, code, started, resumed_from)
            record.status = "done"
            record.finished = time.time()
            record.seconds = round(time.monotonic() - t0, 3)
            record.detail = detail
            self.store.save(run)
            self.store.event(run, "step-done", step=step, seconds=record.seconds, detail=detail)
            self.report(name, step, "done", f"{record.seconds:.1f}s  {detail}")
        verdict = self._recorded_verdict(run)
        if verdict.verdict == "pass":
            run.status = "kept-drained" if self.keep_drained else "resumed"
            code = 0
        else:
            run.status = "drained"
            code = 3 if verdict.verdict == "unreachable" else 1
        self.store.save(run)
        self.store.event(run, "run-end", status=run.status, verdict=verdict.verdict, action=verdict.action)
        self.report(name, "run", "resumed" if code == 0 else "drained",
                    f"{run.status} after {time.monotonic() - started:.1f}s (verdict {verdict.verdict}, "
                    f"action {verdict.action})")
        return NodeOutcome(
            name, run.status, code, verdict.verdict, verdict.action,
            "" if code == 0 else _first_failure(verdict), time.monotonic() - started,
            {s: run.steps[s].seconds or 0.0 for s in STEPS}, run.run, resumed_from,
        )

    def _fail(self, run: NodeRun, step: str, t0: float, exc: BaseException, code: int, started: float,
              resumed_from: str | None) -> NodeOutcome:
        record = run.steps[step]
        record.status = "failed"
        record.finished = time.time()
        record.seconds = round(time.monotonic() - t0, 3)
        message = str(exc) if isinstance(exc, GpudcError) else f"{type(exc).__name__}: {exc}"
        record.detail = message
        run.status = "error"
        run.error = f"{step}: {message}"
        self.store.save(run)
        self.store.event(run, "step-failed", step=step, seconds=record.seconds, error=message, exit_code=code)
        drained = run.steps["drain"].status == "done"
        tail = " (the node stays drained; re-run to continue)" if drained else ""
        self.report(self.node.name, step, "failed", f"{record.seconds:.1f}s  {message}{tail}")
        return NodeOutcome(
            self.node.name, "error", code, None, None, f"{step}: {message}", time.monotonic() - started,
            {s: run.steps[s].seconds or 0.0 for s in STEPS}, run.run, resumed_from,
        )


@dataclass
class _Slot:
    node: Node
    locks: list[FileLock]
    waiting_since: float | None = None
    told: bool = False


def _try_locks(store: StateStore, node: Node) -> tuple[list[FileLock] | None, str]:
    """The node's lock and its NVL72 domain's lock, both or neither; (None, who holds it) if busy."""
    wanted = [("node", node.name)]
    if node.nvlink_domain:
        wanted.append(("domain", node.nvlink_domain))
    got: list[FileLock] = []
    for kind, name in wanted:
        lock = FileLock(store.lock_path(kind, name))
        if not lock.try_acquire(f"{node.name} ({kind} {name})"):
            holder = lock.holder()
            for held in got:
                held.release()
            what = f"NVL72 domain {name}" if kind == "domain" else f"node {name}"
            return None, f"{what} is being reprovisioned by {holder}"
        got.append(lock)
    return got, ""


def reprovision_nodes(
    plan: Plan,
    nodes: Sequence[str],
    *,
    backends: Backends | None = None,
    reason: str = "reprovision",
    max_parallel: int = 4,
    keep_drained: bool = False,
    timeouts: Timeouts | None = None,
    store: StateStore | None = None,
    report: Reporter | None = None,
    poll_s: float = 0.25,
) -> list[NodeOutcome]:
    """Reprovision `nodes` of `plan`; one NodeOutcome per node, in the order given.

    Raises InputError (nothing touched) for an unknown node or a bad argument. Per node: exit
    code 0 back in service (or healthy and kept drained), 1 a step or the verdict failed (the
    node stays drained; with the verdict's action in the drain reason), 3 a BMC or the node
    was unreachable or a step timed out (the node stays drained once drained).
    """
    if max_parallel < 1:
        raise InputError(f"--max-parallel {max_parallel}: must be at least 1")
    names = list(dict.fromkeys(nodes))
    if not names:
        raise InputError("reprovision: name at least one node")
    known = {n.name: n for n in plan.nodes}
    unknown = [n for n in names if n not in known]
    if unknown:
        sample = ", ".join(sorted(known)[:8]) + (" ..." if len(known) > 8 else "")
        raise InputError([f"{n}: not a node of stack {plan.site.stack} (nodes: {sample})" for n in unknown])
    timeouts = timeouts or Timeouts()
    store = store or StateStore.for_site(plan.site.name)
    report = report or console_reporter()
    backends = backends or site_backends(plan)
    slots = [_Slot(known[n], []) for n in names]
    outcomes: dict[str, NodeOutcome] = {}
    pending = list(slots)
    running: dict[Future[NodeOutcome], _Slot] = {}

    def work(slot: _Slot) -> NodeOutcome:
        worker = _Worker(plan, slot.node, backends, store, timeouts, reason, keep_drained, report)
        try:
            return worker.run()
        except Exception as exc:  # a bug must not take the other nodes down
            msg = f"{type(exc).__name__}: {exc}"
            report(slot.node.name, "run", "failed", msg)
            return NodeOutcome(slot.node.name, "error", 1, message=msg)

    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="gpudc-reprovision") as pool:
        try:
            while pending or running:
                for slot in list(pending):
                    if len(running) >= max_parallel:
                        break
                    locks, why = _try_locks(store, slot.node)
                    now = time.monotonic()
                    if locks is None:
                        if slot.waiting_since is None:
                            slot.waiting_since = now
                        if not slot.told:
                            report(slot.node.name, "wait", "wait", why)
                            slot.told = True
                        if now - slot.waiting_since > timeouts.lock_wait:
                            pending.remove(slot)
                            msg = f"waited {timeouts.lock_wait:g}s: {why}"
                            report(slot.node.name, "wait", "failed", msg)
                            outcomes[slot.node.name] = NodeOutcome(slot.node.name, "error", 3, message=msg)
                        continue
                    if slot.told and slot.waiting_since is not None:
                        report(slot.node.name, "wait", "done", f"{now - slot.waiting_since:.1f}s  lock free")
                    slot.locks = locks
                    pending.remove(slot)
                    running[pool.submit(work, slot)] = slot
                if not running:
                    time.sleep(poll_s)
                    continue
                done, _ = wait(list(running), timeout=poll_s, return_when=FIRST_COMPLETED)
                for fut in done:
                    slot = running.pop(fut)
                    for lock in slot.locks:
                        lock.release()
                    outcomes[slot.node.name] = fut.result()
        finally:
            for slot in running.values():
                for lock in slot.locks:
                    lock.release()
    return [outcomes[n] for n in names]


# -- the real world: a site's BMCs, SSH, Ansible and the validator --------------------------------


def ssh_waiter(known_hosts: Path, identity: Path | None, addresses: dict[str, str],
               interval: float = 1.0, port: int = 22, user: str = "root",
               jump: str | None = None) -> Callable[[Node, float], str]:
    """Wait until the node answers SSH with the key known_hosts holds for it (strict: never TOFU).

    A host that presents another key is refused at once: the reimage did not restore the
    pre-seeded key, and its answer cannot be trusted.
    """
    from gpudc.validate.fanout import FanOut, JumpHost, SshOptions, Target

    jump_host = JumpHost.parse(jump) if jump else None

    def wait_ssh(node: Node, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        address = addresses.get(node.name, node.ssh_address)
        last = "not tried"
        attempts = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StepError(f"{node.name} ({address}): no SSH within {timeout:g}s ({last})", 3)
            connect = max(0.5, min(5.0, left))
            options = SshOptions(user=user, port=port, known_hosts=known_hosts, identity=identity, tofu=False,
                                 parallel=1, jump=jump_host,
                                 connect_timeout=connect, auth_timeout=connect,
                                 command_timeout=max(1.0, min(10.0, left)))
            attempts += 1
            with FanOut(options) as fan:
                result = fan.run_one(Target(node.name, address), "true")
            if result.status == "ok" and result.exit_status == 0:
                return f"{address} answered with the pre-seeded host key {result.fingerprint} (try {attempts})"
            if result.status == "host_key":
                raise StepError(f"{node.name}: refused: {result.message}", 1)
            last = result.message or result.status
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    return wait_ssh


def site_backends(plan: Plan, access: SiteAccess | None = None, drainer: Drainer | None = None) -> Backends:
    """The real backends of a site: Redfish BMCs, SSH, ansible-runner, the validator, Slurm or the drain file.

    Every one reaches the site through `access` (gpudc.access): the stack's BMC URL, TLS and
    credential settings, SSH user, key, known_hosts and jump host."""
    from gpudc.access import site_access

    access = access or site_access(plan)

    def bmc(node: Node) -> Bmc:
        if node.name not in access.bmc:
            raise StepError(f"{node.name}: no BMC address in the plan", 2)
        if not access.bmc_username:
            raise StepError(f"site {plan.site.name}: gpudc:bmcUser is not set; reprovision needs the BMC user", 2)
        # short per-call bounds: each step has its own timeout around many calls
        return access.bmc_client(node, timeout=10, retries=2)

    def provision(node: Node, timeout: float) -> str:
        from gpudc.provision.runner import ProvisionStopped, clear_fact_cache, run_provision

        clear_fact_cache(plan.site.name, [node.name])
        try:
            result = run_provision(
                plan, playbook="reprovision.yml", limit=node.name,
                extra_vars={"gpudc_reprovision_wait": int(max(10, min(timeout, 600)))},
                access=access,
                # stopped a little before the step's own timeout: no run is left going behind it
                deadline_s=max(1.0, timeout - PROVISION_STOP_MARGIN_S),
            )
        except ProvisionStopped as exc:
            raise StepError(str(exc), 3) from None
        stats = result.hosts.get(node.name)
        where = f"artifacts {result.artifacts_dir}"
        if stats is None or result.exit_code != 0:
            failures = [f for f in result.failures if f.get("host") == node.name]
            why = f"{failures[-1]['task']}: {failures[-1]['msg']}" if failures else f"ansible rc {result.rc}"
            code = 3 if stats is not None and stats["unreachable"] else 1
            raise StepError(f"reprovision.yml failed on {node.name}: {why} ({where})", code)
        return f"reprovision.yml: ok {stats['ok']}, changed {stats['changed']} in {result.duration_s:.0f}s ({where})"

    def validate(node: Node, timeout: float) -> Verdict:
        from gpudc.validate.fanout import SshOptions
        from gpudc.validate.run import run_validate

        ssh = SshOptions(user=access.ssh_user, port=access.ssh_port, identity=access.ssh_identity,
                         known_hosts=access.known_hosts, jump=access.jump_host(), parallel=1, deadline=timeout)
        verdicts = run_validate(plan, ssh=ssh, limit=node.name, level=VALIDATE_LEVEL,
                                addresses=access.addresses, progress=False)
        mine = [v for v in verdicts if v.node == node.name]
        if not mine:
            raise StepError(f"validate: no verdict for {node.name}")
        return mine[0]

    drainer = drainer or drainer_for(plan)
    register: Callable[[Node, float], str] | None = None
    if isinstance(drainer, SlurmDrainer):
        register = slurmd_restarter(drainer, access)

    return Backends(
        drainer=drainer,
        register=register,
        bmc=bmc,
        wait_ssh=ssh_waiter(access.known_hosts, access.ssh_identity, access.addresses,
                            port=access.ssh_port, user=access.ssh_user, jump=access.jump),
        provision=provision,
        validate=validate,
    )


def _next_second_after(slurmd_start: str) -> None:
    """Wait (at most a second) until the clock is past the second slurmd last started in: slurmctld
    keeps SlurmdStartTime to the second, so a restart within that same second (the provisioning run
    had just started slurmd) would leave no new start time to wait for."""
    try:
        started = datetime.datetime.fromisoformat(slurmd_start)
    except ValueError:
        return
    wait = (started + datetime.timedelta(seconds=1) - datetime.datetime.now()).total_seconds()
    if 0 < wait <= 1.5:
        time.sleep(wait + 0.05)


def slurmd_restarter(slurm: SlurmDrainer, access: SiteAccess) -> Callable[[Node, float], str]:
    """Restart slurmd on a node over SSH and wait (bounded) for slurmctld to take its new
    registration: a node reimaged while drained may still be held with what its slurmd registered
    before (INVALID_REG, "gres/gpu count reported lower than configured"), which Slurm never
    resumes until slurmd registers again."""
    from gpudc.validate.fanout import FanOut, SshOptions, Target

    def register(node: Node, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        try:
            before = slurm.state(node.name).slurmd_start
        except DrainError as exc:
            raise StepError(str(exc)) from None
        _next_second_after(before)
        left = max(1.0, deadline - time.monotonic())
        options = SshOptions(user=access.ssh_user, port=access.ssh_port, identity=access.ssh_identity,
                             known_hosts=access.known_hosts, jump=access.jump_host(), parallel=1, tofu=False,
                             connect_timeout=min(10.0, left), auth_timeout=min(10.0, left),
                             command_timeout=min(30.0, left))
        address = access.addresses.get(node.name, node.ssh_address)
        with FanOut(options) as fan:
            result = fan.run_one(Target(node.name, address), "systemctl restart slurmd")
        if result.status != "ok" or result.exit_status != 0:
            why = (result.stderr or result.message or result.status).strip().splitlines()
            raise StepError(f"{node.name}: restarting slurmd: {why[-1][:300] if why else result.status}",
                            1 if result.status == "ok" else 3)
        try:
            seen = slurm.wait_registered(node.name, max(1.0, deadline - time.monotonic()), after=before)
        except DrainError as exc:
            raise StepError(str(exc)) from None
        return f"slurmd restarted, {seen}"

    return register

