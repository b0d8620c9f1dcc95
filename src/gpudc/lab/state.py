"""The lab's run-time state: one JSON file under the run dir, changed under an exclusive lock.

The run dir (`$GPUDC_LAB_RUN_DIR`, default `/run/gpudc-lab`) holds the state file, logs and the
tmpfs with every host's root filesystem; `lab down` removes all of it. The CLI, the library API
and the BMC service (a separate process) all change the state through `locked()`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_THREAD_LOCK = threading.RLock()
_DEPTH = threading.local()


def run_dir() -> Path:
    return Path(os.environ.get("GPUDC_LAB_RUN_DIR", "/run/gpudc-lab"))


def state_file() -> Path:
    return run_dir() / "state.json"


def lock_file() -> Path:
    return Path(os.environ.get("GPUDC_LAB_LOCK", "/run/lock/gpudc-lab.lock"))


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Exclusive lock across processes (flock) and threads; re-entrant within a thread."""
    with _THREAD_LOCK:
        depth = getattr(_DEPTH, "n", 0)
        if depth:
            _DEPTH.n = depth + 1
            try:
                yield
            finally:
                _DEPTH.n -= 1
            return
        path = lock_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            _DEPTH.n = 1
            try:
                yield
            finally:
                _DEPTH.n = 0
                fcntl.flock(fh, fcntl.LOCK_UN)


def load() -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(state_file().read_text())
    except FileNotFoundError:
        return None
    return data


def save(state: dict[str, Any]) -> None:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)


def host(state: dict[str, Any], node: str) -> dict[str, Any]:
    for entry in state["hosts"]:
        if entry["name"] == node:
            result: dict[str, Any] = entry
            return result
    raise KeyError(node)
