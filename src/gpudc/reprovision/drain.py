"""Taking a node out of service and putting it back: Slurm, or a drain list file.

- `SlurmDrainer`: `scontrol update NodeName=N State=DRAIN Reason="gpudc: ..."` and
  `State=RESUME`, when the site runs Slurm (`plan.site.has_slurm`) and `scontrol` is on PATH.
- `FileDrainer`: a drain list file that schedulers and scripts can read, for sites without Slurm
  (and the lab): `<state dir>/<site>/drained-nodes`, one node a line,
  `NODE<TAB>SINCE (UTC ISO 8601)<TAB>REASON`, lines starting with `#` are comments. Updated
  atomically under a lock, so concurrent commands never lose each other's lines.

Both raise `DrainError` with a one-line message when they cannot do their job; every external
command has a timeout.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from gpudc.errors import GpudcError
from gpudc.model.site import check_label
from gpudc.plan.types import Plan
from gpudc.project import site_state_dir

DRAIN_FILE = "drained-nodes"
REASON_PREFIX = "gpudc: "
_MAX_REASON = 200


class DrainError(GpudcError):
    """The scheduler refused or could not be asked to drain/resume a node."""

    exit_code = 1


class Drainer(Protocol):
    name: str

    def drain(self, node: str, reason: str) -> None: ...

    def resume(self, node: str) -> None: ...

    def is_drained(self, node: str) -> bool | None:
        """True/False when known, None when the backend cannot tell."""
        ...


def clean_reason(reason: str) -> str:
    """`gpudc: <reason>` on one line, printable, without quotes that could break a command line."""
    text = " ".join(reason.replace('"', "'").split())
    text = "".join(ch for ch in text if ch.isprintable())
    if not text.startswith(REASON_PREFIX):
        text = REASON_PREFIX + text
    return text[:_MAX_REASON]


class SlurmDrainer:
    """Drain and resume through Slurm's `scontrol` (a node's plan name is its Slurm NodeName)."""

    name = "slurm"

    def __init__(self, scontrol: str = "scontrol", timeout: float = 30.0) -> None:
        self.scontrol = scontrol
        self.timeout = timeout

    def drain_argv(self, node: str, reason: str) -> list[str]:
        check_label(node)
        return [self.scontrol, "update", f"NodeName={node}", "State=DRAIN", f"Reason={clean_reason(reason)}"]

    def resume_argv(self, node: str) -> list[str]:
        check_label(node)
        return [self.scontrol, "update", f"NodeName={node}", "State=RESUME"]

    def show_argv(self, node: str) -> list[str]:
        check_label(node)
        return [self.scontrol, "--oneliner", "show", "node", node]

    def _run(self, argv: Sequence[str], what: str) -> str:
        try:
            proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise DrainError(f"slurm: {what}: `{self.scontrol}` is not installed") from None
        except subprocess.TimeoutExpired:
            raise DrainError(f"slurm: {what}: scontrol did not answer within {self.timeout:g}s") from None
        if proc.returncode != 0:
            why = (proc.stderr or proc.stdout).strip().splitlines()
            raise DrainError(f"slurm: {what}: scontrol exit {proc.returncode}: {why[-1][:300] if why else ''}")
        return proc.stdout

    def drain(self, node: str, reason: str) -> None:
        self._run(self.drain_argv(node, reason), f"drain {node}")

    def resume(self, node: str) -> None:
        self._run(self.resume_argv(node), f"resume {node}")

    def is_drained(self, node: str) -> bool | None:
        try:
            out = self._run(self.show_argv(node), f"show {node}")
        except DrainError:
            return None
        for word in out.split():
            if word.startswith("State="):
                return "DRAIN" in word.upper()
        return None


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
        fd, tmp = tempfile.mkstemp(prefix=".drained.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(header + body)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

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


def drainer_for(plan: Plan, *, scontrol: str | None = None) -> Drainer:
    """Slurm when the site has it and `scontrol` is on PATH; the drain list file otherwise."""
    if plan.site.has_slurm:
        found = scontrol or shutil.which("scontrol")
        if found:
            return SlurmDrainer(found)
    return FileDrainer.for_site(plan.site.name)
