"""The validator's history: every run, verdict and finding in SQLite.

Default file `gpudc.project.history_path()` (`<state>/history.db`, or `GPUDC_HISTORY`), or `--history F`.
It answers three questions the checks and reports ask:
- how many reboots has the same cause already had on this node (`NodeHistory.reboots_for`),
  so that the same XID still asking for a reboot after 2 reboots escalates to RMA;
- which XID events were already reported on this node (`NodeHistory.seen_xids`, dedupe);
- which nodes flap (pass and fail alternating over the last runs).

A reboot is counted from the node's boot time that the probe reports: a cause recorded with
action `reboot` under one boot, when the node has booted since, is one reboot that did not help.
Where the boot time is unknown (old records, captured files) each run counts as one boot.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpudc.errors import InputError
from gpudc.validate.types import Finding, Verdict

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    finished REAL,
    stack TEXT NOT NULL,
    site TEXT NOT NULL,
    level TEXT NOT NULL,
    nodes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS verdicts (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    node TEXT NOT NULL,
    verdict TEXT NOT NULL,
    action TEXT NOT NULL,
    boot_time REAL,
    time REAL NOT NULL,
    PRIMARY KEY (run_id, node)
);
CREATE INDEX IF NOT EXISTS verdicts_node ON verdicts(node, run_id);
CREATE TABLE IF NOT EXISTS findings (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    node TEXT NOT NULL,
    seq INTEGER NOT NULL,
    check_name TEXT NOT NULL,
    severity TEXT NOT NULL,
    action TEXT NOT NULL,
    gpu INTEGER,
    message TEXT NOT NULL,
    evidence TEXT NOT NULL,
    PRIMARY KEY (run_id, node, seq)
);
CREATE INDEX IF NOT EXISTS findings_node ON findings(node, check_name);
CREATE TABLE IF NOT EXISTS xid_events (
    node TEXT NOT NULL,
    id TEXT NOT NULL,
    first_run INTEGER NOT NULL REFERENCES runs(id),
    PRIMARY KEY (node, id)
);
"""

#: Verdicts that count as healthy / unhealthy when looking for flapping (unreachable is neither).
_GOOD = {"pass", "warn"}
_BAD = {"fail"}
#: Two boot times closer than this are the same boot (the probe derives it from uptime).
_BOOT_JITTER_S = 60.0


def default_history_path() -> Path:
    from gpudc.project import history_path

    return history_path()


@dataclass(slots=True)
class PastVerdict:
    run_id: int
    time: float
    stack: str
    level: str
    verdict: str
    action: str
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "time": datetime.fromtimestamp(self.time, UTC).isoformat(timespec="seconds"),
            "stack": self.stack,
            "level": self.level,
            "verdict": self.verdict,
            "action": self.action,
            "findings": [f.to_dict() for f in self.findings],
        }


class NodeHistory:
    """One node's past, as the checks see it (implements gpudc.validate.checks.HistoryView)."""

    def __init__(self, db: History, node: str, boot_time: float | None, before_run: int | None) -> None:
        self._db = db
        self.node = node
        self.boot_time = boot_time
        self.before_run = before_run  # only runs older than this one count (None: all)

    def _older(self) -> tuple[str, list[Any]]:
        if self.before_run is None:
            return "", []
        return " AND v.run_id < ?", [self.before_run]

    def reboots_for(self, key: str) -> int:
        """How many boots of this node already asked for a reboot for `key` and were rebooted.

        `key` names a cause: a finding's check name (`xid:79`), optionally narrowed to one GPU
        as `check@gpu` (`xid:79@3`). The current boot does not count (it has not rebooted yet).
        """
        check, _, gpu_text = key.partition("@")
        where, args = self._older()
        sql = (
            "SELECT DISTINCT v.run_id, v.boot_time FROM findings f JOIN verdicts v "
            "ON v.run_id = f.run_id AND v.node = f.node "
            "WHERE f.node = ? AND f.check_name = ? AND f.action = 'reboot'" + where
        )
        params: list[Any] = [self.node, check, *args]
        if gpu_text:
            sql += " AND f.gpu = ?"
            params.append(int(gpu_text) if gpu_text.lstrip("-").isdigit() else None)
        unknown = 0
        times: list[float] = []
        for _run_id, boot_time in self._db.connection.execute(sql, params):
            if boot_time is None:
                unknown += 1
            elif self.boot_time is None or abs(boot_time - self.boot_time) > _BOOT_JITTER_S:
                times.append(boot_time)
        return unknown + _distinct_boots(times)

    def seen_xids(self) -> set[str]:
        """Ids of the XID events (probe `xids[].id`) reported on this node by earlier runs."""
        sql = "SELECT id FROM xid_events WHERE node = ?"
        params: list[Any] = [self.node]
        if self.before_run is not None:
            sql += " AND first_run < ?"
            params.append(self.before_run)
        return {row[0] for row in self._db.connection.execute(sql, params)}


class History:
    """The SQLite store. One per process and thread (open it where you use it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            self.connection = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA foreign_keys=ON")
            self.connection.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise InputError(f"{path}: cannot open the history database ({exc})") from None

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------

    def start_run(self, stack: str, site: str, level: str, nodes: int) -> int:
        cur = self.connection.execute(
            "INSERT INTO runs (started, stack, site, level, nodes) VALUES (?, ?, ?, ?, ?)",
            (time.time(), stack, site, level, nodes),
        )
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def record(
        self,
        run_id: int,
        verdict: Verdict,
        boot_time: float | None = None,
        xid_ids: Iterable[str] = (),
    ) -> None:
        """Store one node's verdict and findings, its boot time (from the probe) and the ids of
        the XID events this run reported (gpudc.validate.checks.reported_xid_ids)."""
        self.record_many(run_id, [(verdict, boot_time, xid_ids)])

    def record_many(
        self, run_id: int, items: Iterable[tuple[Verdict, float | None, Iterable[str]]]
    ) -> None:
        """`record` for many nodes in one transaction (one commit for a whole collected run)."""
        with self.recording(run_id) as add:
            add(items)

    @contextlib.contextmanager
    def recording(
        self, run_id: int
    ) -> Iterator[Callable[[Iterable[tuple[Verdict, float | None, Iterable[str]]]], None]]:
        """`record_many` in parts, as a run's verdicts come in: every part given to the function
        this yields goes into one transaction, committed when the block ends and rolled back when
        it raises (a reader never sees part of the run). The transaction begins with the first
        part; while it is open, other writers wait (the connection's busy timeout)."""
        conn = self.connection
        now = time.time()
        began = False

        def add(items: Iterable[tuple[Verdict, float | None, Iterable[str]]]) -> None:
            nonlocal began
            verdicts: list[tuple[Any, ...]] = []
            findings: list[tuple[Any, ...]] = []
            xids: list[tuple[Any, ...]] = []
            for verdict, boot_time, xid_ids in items:
                verdicts.append((run_id, verdict.node, verdict.verdict, verdict.action, boot_time, now))
                findings.extend((run_id, verdict.node, i, f.check, f.severity, f.action, f.gpu, f.message, f.evidence)
                                for i, f in enumerate(verdict.findings))
                xids.extend((verdict.node, str(i), run_id) for i in xid_ids)
            if not began:
                conn.execute("BEGIN")
                began = True
            conn.executemany(
                "INSERT OR REPLACE INTO verdicts (run_id, node, verdict, action, boot_time, time) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                verdicts,
            )
            conn.executemany("DELETE FROM findings WHERE run_id = ? AND node = ?", [v[:2] for v in verdicts])
            conn.executemany(
                "INSERT INTO findings (run_id, node, seq, check_name, severity, action, gpu, message, evidence) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                findings,
            )
            conn.executemany("INSERT OR IGNORE INTO xid_events (node, id, first_run) VALUES (?, ?, ?)", xids)

        try:
            yield add
        except BaseException:
            if began:
                conn.execute("ROLLBACK")
            raise
        if began:
            conn.execute("COMMIT")

    def finish_run(self, run_id: int) -> None:
        self.connection.execute("UPDATE runs SET finished = ? WHERE id = ?", (time.time(), run_id))

    # -- reading ------------------------------------------------------------------------------

    def view(self, node: str, boot_time: float | None = None, before_run: int | None = None) -> NodeHistory:
        return NodeHistory(self, node, boot_time, before_run)

    def node_history(self, node: str, limit: int = 50) -> list[PastVerdict]:
        """The node's verdicts, newest first."""
        rows = self.connection.execute(
            "SELECT v.run_id, v.time, r.stack, r.level, v.verdict, v.action FROM verdicts v "
            "JOIN runs r ON r.id = v.run_id WHERE v.node = ? ORDER BY v.run_id DESC LIMIT ?",
            (node, limit),
        ).fetchall()
        past = [PastVerdict(*row) for row in rows]
        for item in past:
            item.findings = [
                Finding(check=c, severity=s, message=m, action=a, gpu=g, evidence=e)
                for c, s, a, g, m, e in self.connection.execute(
                    "SELECT check_name, severity, action, gpu, message, evidence FROM findings "
                    "WHERE run_id = ? AND node = ? ORDER BY seq",
                    (item.run_id, node),
                )
            ]
        return past

    def recent_verdicts(self, node: str, runs: int) -> list[str]:
        """The node's last `runs` verdicts, oldest first."""
        rows = self.connection.execute(
            "SELECT verdict FROM verdicts WHERE node = ? ORDER BY run_id DESC LIMIT ?", (node, runs)
        ).fetchall()
        return [r[0] for r in reversed(rows)]

    def flapping(self, nodes: Iterable[str], window: int = 6, min_flips: int = 3) -> dict[str, int]:
        """Nodes whose verdict flipped between healthy and failing at least `min_flips` times
        within their last `window` verdicts -> the number of flips."""
        found: dict[str, int] = {}
        for node in nodes:
            flips = count_flips(self.recent_verdicts(node, window))
            if flips >= min_flips:
                found[node] = flips
        return found

    def known_nodes(self) -> list[str]:
        return [r[0] for r in self.connection.execute("SELECT DISTINCT node FROM verdicts ORDER BY node")]


def _distinct_boots(times: list[float]) -> int:
    """Boot times that differ by more than the jitter of `now - uptime` are different boots."""
    count, last = 0, None
    for t in sorted(times):
        if last is None or t - last > _BOOT_JITTER_S:
            count += 1
        last = t
    return count


def count_flips(verdicts: Sequence[str]) -> int:
    """Changes between healthy (pass/warn) and failing (fail); unreachable runs are skipped."""
    states = [v in _BAD for v in verdicts if v in _GOOD or v in _BAD]
    return sum(1 for a, b in itertools.pairwise(states) if a != b)


def history_json(past: Sequence[PastVerdict]) -> str:
    return json.dumps([p.to_dict() for p in past], indent=2)
