"""Rolling upgrade: for each wave, drain its nodes, run upgrade.yml on them, validate, resume.

    outcome = rollout(plan, limit="pool_h200", max_unavailable=2, backends=upgrade_backends(plan))

The waves come from gpudc.upgrade.waves (a small share of each pool, never two trays of one
NVL72 domain). A wave fails when more of its nodes fail (upgrade or validation) than
`max_fail_percentage` allows (default 0: any); the rollout then stops, the failed nodes stay
drained with the reason, the wave's healthy nodes are resumed. A node that was drained before
the rollout reached it (by an operator, or gpudc-probe) is upgraded and validated but left
drained: the rollout never puts into service a node it did not take out.

Progress is journalled in `<site state dir>/upgrade/rollout.json` (replaced atomically after each
step): a killed rollout, run again with the same stack and limit, carries on with the first wave
not finished (that wave from its start: drain, upgrade and resume are idempotent), and a stopped
one re-tries the wave that failed. `restart=True` forgets an unfinished journal.

Every step is bounded: the drainer's waits by `drain_timeout`/`resume_timeout`, upgrade.yml by
`upgrade_timeout` (the runner stops it), the validation by `validate_timeout`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpudc.errors import InputError
from gpudc.files import write_atomic
from gpudc.plan.types import Plan
from gpudc.project import site_state_dir
from gpudc.reprovision.drain import REASON_PREFIX, Drainer, DrainError
from gpudc.upgrade.waves import plan_waves
from gpudc.validate.run import select_nodes

JOURNAL_FORMAT = "gpudc-upgrade-journal"
JOURNAL_VERSION = 1
REASON = "upgrade"

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Limits:
    drain: float = 1800.0
    upgrade: float = 3600.0
    validate: float = 600.0
    resume: float = 300.0


@dataclass
class Backends:
    """What a rollout acts through (the real ones: `upgrade_backends`; tests pass their own).

    upgrade(nodes, timeout) -> failed node -> why; validate(nodes, timeout) -> node -> (verdict, why)."""

    drainer: Drainer
    upgrade: Callable[[list[str], float], dict[str, str]]
    validate: Callable[[list[str], float], dict[str, tuple[str, str]]]


@dataclass
class Outcome:
    waves: list[list[str]]
    done: int  # waves finished
    status: str  # done | stopped
    failed: dict[str, str] = field(default_factory=dict)  # node -> why (left drained)
    kept_drained: list[str] = field(default_factory=list)  # drained before the rollout; left so

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "done" else 1

    def to_dict(self) -> dict[str, Any]:
        return {"waves": self.waves, "done": self.done, "status": self.status, "failed": self.failed,
                "kept_drained": self.kept_drained}


def journal_path(site: str) -> Path:
    return site_state_dir(site) / "upgrade" / "rollout.json"


def _write_journal(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, json.dumps(doc, indent=2, sort_keys=True) + "\n", 0o600, durable=True)


def read_journal(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable upgrade journal ({exc}); remove it or pass --restart") from None
    if not isinstance(doc, dict) or doc.get("format") != JOURNAL_FORMAT or doc.get("version") != JOURNAL_VERSION:
        raise InputError(f"{path}: not a {JOURNAL_FORMAT} {JOURNAL_VERSION} document; remove it or pass --restart")
    return doc


def _start(plan: Plan, path: Path, limit: str | None, max_unavailable: int | float | None,
           restart: bool, say: Say) -> dict[str, Any]:
    """The journal to work from: the unfinished one of this stack and limit, or a new one."""
    old = None if restart else read_journal(path)
    if old is not None and old.get("status") != "done":
        if old.get("stack") != plan.site.stack or old.get("limit") != (limit or ""):
            raise InputError(f"an unfinished upgrade of stack {old.get('stack')} --limit {old.get('limit')!r} is in "
                             f"{path}: finish it (run it again) or pass --restart")
        say(f"upgrade: resuming at wave {int(old['done']) + 1}/{len(old['waves'])} (journal {path})")
        return old
    waves = plan_waves(select_nodes(plan, limit), max_unavailable)
    return {"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION, "stack": plan.site.stack, "limit": limit or "",
            "waves": waves, "done": 0, "status": "running", "started": time.time(), "wave": None,
            "kept_drained": [], "failed": {}}


def rollout(
    plan: Plan,
    backends: Backends,
    *,
    limit: str | None = None,
    max_unavailable: int | float | None = None,
    max_fail_percentage: float = 0.0,
    limits: Limits = Limits(),
    restart: bool = False,
    journal: Path | None = None,
    say: Say = _quiet,
) -> Outcome:
    if not 0 <= max_fail_percentage <= 100:
        raise InputError(f"--max-fail-percentage {max_fail_percentage:g}: between 0 and 100")
    path = journal or journal_path(plan.site.name)
    doc = _start(plan, path, limit, max_unavailable, restart, say)
    doc["status"] = "running"
    _write_journal(path, doc)
    waves: list[list[str]] = doc["waves"]
    drainer = backends.drainer
    total = len(waves)
    while doc["done"] < total:
        index = int(doc["done"])
        wave = waves[index]
        label = f"wave {index + 1}/{total}"
        t0 = time.monotonic()
        say(f"upgrade: {label}: {', '.join(wave)}")
        state = doc["wave"] if isinstance(doc.get("wave"), dict) and doc["wave"].get("index") == index else None
        if state is None:
            # who was out of service before we came: recorded once, before our own drain
            kept = [n for n in wave if _drained_by_others(drainer, n)]
            state = {"index": index, "kept_drained": kept, "step": "drain"}
            doc["wave"] = state
            _write_journal(path, doc)
        kept = list(state["kept_drained"])
        failed: dict[str, str] = {}
        for node in wave:
            if node in kept:
                continue
            try:
                drainer.drain(node, f"{REASON_PREFIX}{REASON} {label}")
            except DrainError as exc:
                failed[node] = f"drain: {exc}"
        for node in wave:
            if node in kept or node in failed:
                continue
            try:
                say(f"upgrade: {node}: {drainer.wait_drained(node, limits.drain, say)}")
            except DrainError as exc:
                failed[node] = f"drain: {exc}"
        todo = [n for n in wave if n not in failed]
        state["step"] = "upgrade"
        _write_journal(path, doc)
        if todo:
            for node, why in backends.upgrade(todo, limits.upgrade).items():
                failed[node] = f"upgrade.yml: {why}"
        todo = [n for n in todo if n not in failed]
        state["step"] = "validate"
        _write_journal(path, doc)
        if todo:
            verdicts = backends.validate(todo, limits.validate)
            for node in todo:
                verdict, why = verdicts.get(node, ("unreachable", "no verdict"))
                if verdict not in ("pass", "warn"):
                    failed[node] = f"validate: {verdict}: {why}"
        state["step"] = "resume"
        _write_journal(path, doc)
        for node in wave:
            if node in kept or node in failed:
                continue
            try:
                drainer.resume(node)
                say(f"upgrade: {node}: {drainer.wait_resumed(node, limits.resume)}")
            except DrainError as exc:
                failed[node] = f"resume: {exc}"
        for node, why in failed.items():
            say(f"upgrade: {node}: FAILED: {why} (left drained)")
            with contextlib.suppress(DrainError):
                if drainer.is_drained(node) is False:
                    drainer.drain(node, f"{REASON_PREFIX}{REASON} {label} failed: {why}")
        doc["kept_drained"] = sorted({*doc["kept_drained"], *kept})
        doc["failed"] = {k: v for k, v in doc["failed"].items() if k not in wave} | failed
        share = 100.0 * len(failed) / len(wave)
        say(f"upgrade: {label}: {len(wave) - len(failed)}/{len(wave)} upgraded in {time.monotonic() - t0:.0f}s"
            + (f", {len(kept)} left drained as found" if kept else ""))
        if failed and share > max_fail_percentage:
            doc["status"] = "stopped"
            _write_journal(path, doc)
            say(f"upgrade: stopped at {label}: {len(failed)} of {len(wave)} node(s) failed "
                f"({share:.0f}% > --max-fail-percentage {max_fail_percentage:g}); run again to retry this wave")
            return Outcome(waves, index, "stopped", dict(doc["failed"]), list(doc["kept_drained"]))
        doc["done"] = index + 1
        doc["wave"] = None
        _write_journal(path, doc)
    doc["status"] = "done"
    doc["finished"] = time.time()
    _write_journal(path, doc)
    return Outcome(waves, total, "done", dict(doc["failed"]), list(doc["kept_drained"]))


def _drained_by_others(drainer: Drainer, node: str) -> bool:
    """Drained already, and not by an upgrade (ours, interrupted, is drained again and resumed)."""
    reason = drainer.current_reason(node)
    if reason is not None:
        return not reason.startswith(f"{REASON_PREFIX}{REASON} ")
    return bool(drainer.is_drained(node))


def upgrade_backends(plan: Plan, *, drainer: Drainer | None = None) -> Backends:
    """The real backends: the site's drainer, upgrade.yml through ansible-runner, the validator."""
    from gpudc.access import site_access
    from gpudc.provision.runner import ProvisionStopped, clear_fact_cache, run_provision
    from gpudc.reprovision.drain import drainer_for
    from gpudc.reprovision.workflow import PROVISION_STOP_MARGIN_S, VALIDATE_LEVEL
    from gpudc.validate.fanout import SshOptions
    from gpudc.validate.run import run_validate

    access = site_access(plan)

    def upgrade(nodes: list[str], timeout: float) -> dict[str, str]:
        clear_fact_cache(plan.site.name, nodes)
        try:
            # the wave is the run: every host of it in the playbook's one wave
            result = run_provision(plan, playbook="upgrade.yml", limit=",".join(nodes),
                                   extra_vars={"gpudc_upgrade_wave": 0}, access=access,
                                   deadline_s=max(1.0, timeout - PROVISION_STOP_MARGIN_S))
        except ProvisionStopped as exc:
            return {n: str(exc) for n in nodes}
        out: dict[str, str] = {}
        for node in nodes:
            stats = result.hosts.get(node)
            mine = [f for f in result.failures if f.get("host") == node]
            if stats is None or stats["failed"] or stats["unreachable"] or mine:
                why = f"{mine[-1]['task']}: {mine[-1]['msg']}" if mine else f"ansible rc {result.rc}"
                out[node] = f"{why} (artifacts {result.artifacts_dir})"
        return out

    def validate(nodes: list[str], timeout: float) -> dict[str, tuple[str, str]]:
        ssh = SshOptions(user=access.ssh_user, port=access.ssh_port, identity=access.ssh_identity,
                         known_hosts=access.known_hosts, jump=access.jump_host(), deadline=timeout)
        verdicts = run_validate(plan, ssh=ssh, limit=",".join(nodes), level=VALIDATE_LEVEL,
                                addresses=access.addresses, progress=False)
        return {v.node: (v.verdict, "; ".join(f.message for f in v.findings if f.severity == "fail")[:300])
                for v in verdicts}

    return Backends(drainer=drainer or drainer_for(plan), upgrade=upgrade, validate=validate)


def summary(outcome: Outcome) -> str:
    lines = [f"upgrade {outcome.status}: {outcome.done}/{len(outcome.waves)} wave(s)"]
    lines += [f"  {n}: failed, left drained: {why}" for n, why in sorted(outcome.failed.items())]
    lines += [f"  {n}: was drained before the upgrade; upgraded and left drained" for n in outcome.kept_drained]
    return "\n".join(lines)
