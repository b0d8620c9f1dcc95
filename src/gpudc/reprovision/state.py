"""What the reprovision workflow remembers on disk: one state file per node, and lock files.

Layout under the site's state dir (`gpudc.project.site_state_dir(site)/reprovision/`):

- `<node>.json`: the node's current (or last) run: its steps with status, start, end, seconds
  and detail; the verdict; the outcome. Written atomically after every change, so a run killed
  at any moment leaves a file a re-run can continue from (`resume_point`).
- `<node>.log`: every event of every run, one JSON object a line (append only).
- `locks/node-<node>.lock`, `locks/domain-<nvl72 domain>.lock`: `flock` locks. Two commands
  never work on the same node, nor on two nodes of one NVL72 domain, at the same time. A lock
  dies with the process that held it, so a killed command never leaves a stale lock.

No secret is ever written here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gpudc.files import write_atomic
from gpudc.model.site import check_label
from gpudc.project import site_state_dir

#: The workflow's steps, in order.
STEPS: tuple[str, ...] = ("check", "drain", "reimage", "wait_ssh", "provision", "validate", "resume")

StepStatus = Literal["pending", "running", "done", "failed"]
#: running / error: the run is not finished (a re-run continues it).
#: resumed: healthy and back in service; kept-drained: healthy, left drained on request;
#: drained: the verdict was not pass, the node stays drained with the verdict's action.
RunStatus = Literal["running", "error", "resumed", "kept-drained", "drained"]
FINAL: frozenset[str] = frozenset({"resumed", "kept-drained", "drained"})


def state_root(site: str) -> Path:
    """The site's reprovision state dir (made on first use, mode 0700)."""
    path = site_state_dir(site) / "reprovision"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


@dataclass(slots=True)
class StepRecord:
    status: StepStatus = "pending"
    started: float | None = None
    finished: float | None = None
    seconds: float | None = None
    detail: str = ""
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "started": self.started,
            "finished": self.finished,
            "seconds": self.seconds,
            "detail": self.detail,
            "attempts": self.attempts,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRecord:
        status = data.get("status", "pending")
        if status not in ("pending", "running", "done", "failed"):
            status = "pending"
        return cls(
            status=status,
            started=data.get("started"),
            finished=data.get("finished"),
            seconds=data.get("seconds"),
            detail=str(data.get("detail", "")),
            attempts=int(data.get("attempts", 0)),
        )


@dataclass(slots=True)
class NodeRun:
    """One reprovision run of one node, as its state file holds it."""

    node: str
    site: str
    run: int = 1
    status: RunStatus = "running"
    reason: str = ""
    started: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)
    steps: dict[str, StepRecord] = field(default_factory=lambda: {s: StepRecord() for s in STEPS})
    verdict: dict[str, Any] | None = None
    action: str | None = None
    error: str | None = None
    drain_backend: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    def resume_point(self) -> str | None:
        """The first step not done (None: every step is done)."""
        for name in STEPS:
            if self.steps[name].status != "done":
                return name
        return None

    def last_done(self) -> str | None:
        done = [s for s in STEPS if self.steps[s].status == "done"]
        return done[-1] if done else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "site": self.site,
            "run": self.run,
            "status": self.status,
            "reason": self.reason,
            "started": self.started,
            "updated": self.updated,
            "pid": self.pid,
            "steps": {name: self.steps[name].to_dict() for name in STEPS},
            "verdict": self.verdict,
            "action": self.action,
            "error": self.error,
            "drain_backend": self.drain_backend,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeRun:
        steps_in = data.get("steps") or {}
        status = data.get("status", "running")
        if status not in ("running", "error", "resumed", "kept-drained", "drained"):
            status = "error"
        return cls(
            node=str(data["node"]),
            site=str(data["site"]),
            run=int(data.get("run", 1)),
            status=status,
            reason=str(data.get("reason", "")),
            started=float(data.get("started", time.time())),
            updated=float(data.get("updated", time.time())),
            pid=int(data.get("pid", 0)),
            steps={s: StepRecord.from_dict(steps_in.get(s) or {}) for s in STEPS},
            verdict=data.get("verdict"),
            action=data.get("action"),
            error=data.get("error"),
            drain_backend=data.get("drain_backend"),
        )


class StateStore:
    """State files and event logs of one site's reprovision runs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    @classmethod
    def for_site(cls, site: str) -> StateStore:
        return cls(state_root(site))

    def path(self, node: str) -> Path:
        check_label(node)
        return self.root / f"{node}.json"

    def log_path(self, node: str) -> Path:
        return self.root / f"{node}.log"

    def load(self, node: str) -> NodeRun | None:
        """The node's state, or None if it has none. A corrupt file is set aside, not fatal."""
        path = self.path(node)
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or data.get("node") != node:
                raise ValueError("not a state file of this node")
            return NodeRun.from_dict(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                path.replace(path.with_suffix(f".corrupt-{int(time.time())}"))
            return None

    def save(self, run: NodeRun) -> None:
        run.updated = time.time()
        write_atomic(self.path(run.node), json.dumps(run.to_dict(), indent=2) + "\n", 0o600, durable=True)

    def event(self, run: NodeRun, kind: str, **data: Any) -> None:
        record = {"time": time.time(), "node": run.node, "run": run.run, "event": kind, **data}
        with open(self.log_path(run.node), "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    def events(self, node: str) -> list[dict[str, Any]]:
        try:
            lines = self.log_path(node).read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def begin(self, node: str, site: str, reason: str) -> tuple[NodeRun, bool]:
        """(run, resumed): the unfinished run of the node to continue, or a new one."""
        previous = self.load(node)
        if previous is not None and not previous.finished:
            previous.pid = os.getpid()
            previous.status = "running"
            previous.error = None
            for record in previous.steps.values():
                if record.status in ("running", "failed"):
                    record.status = "pending"
            self.save(previous)
            return previous, True
        number = previous.run + 1 if previous is not None else 1
        run = NodeRun(node=node, site=site, run=number, reason=reason)
        self.save(run)
        return run, False

    # -- locks ----------------------------------------------------------------------------------

    def lock_path(self, kind: str, name: str) -> Path:
        check_label(name)
        locks = self.root / "locks"
        locks.mkdir(exist_ok=True, mode=0o700)
        return locks / f"{kind}-{name}.lock"


class FileLock:
    """A non-blocking `flock` on a file; the holder's description is written into it for messages."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self, holder: str) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{holder} pid {os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        """Who holds the lock (as its holder wrote it), for 'waiting for ...' messages."""
        try:
            return self.path.read_text().strip() or "another command"
        except OSError:
            return "another command"

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
