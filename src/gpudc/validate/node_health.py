#!/usr/bin/env python3
"""gpudc-probe: the validator's probe, run on the node itself (by Slurm), stdlib only.

    gpudc-probe [--level quick ...]        the probe as the validator runs it over SSH: one
                                           `@@gpudc-probe@@ {facts}` line on stdout
    gpudc-probe --health [--prolog]        Slurm's HealthCheckProgram (and optionally Prolog):
                                           probe (quick), judge against /etc/gpudc/probe.json,
                                           write the verdict, drain this node on fail

`--health` runs the same probe (gpudc/validate/probe_script.py, installed beside this file by
the gpudc_probe role) inside a budget well under the 60 s after which Slurm kills a health
check, and judges what a quick check can judge on its own: GPUs lost or missing against the
plan's count, NVML calls that hang, and XIDs since boot that NVIDIA's catalog (the copy the
role installs) says need action. Heavy tests (DCGM diag, NCCL) belong in jobs.

It writes the node-local verdict, with the facts it judged, as JSON (`<state dir>/verdict.json`,
format gpudc-node-verdict 1, replaced atomically) and as Prometheus textfile metrics. On fail it
drains its own node through `scontrol` with the first finding as the reason, unless the node is
drained already (an earlier reason, by gpudc or by hand, is kept). It never resumes a node:
that is `gpudc reprovision`'s, after a full validation. `gpudc validate --collect` gathers the
verdict files and judges their facts with the whole policy and the node's history.

Exit status: 0 pass or warn, 1 fail (a failing Prolog makes Slurm requeue the job), 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

try:  # inside the gpudc package
    from gpudc.validate import probe_script
except ImportError:  # on a node: installed side by side by the gpudc_probe role
    sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
    import probe_script  # type: ignore[no-redef]

FORMAT = "gpudc-node-verdict"
VERSION = 1
CONFIG = "/etc/gpudc/probe.json"
STATE_DIR = "/var/lib/gpudc-probe"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
#: Slurm kills a HealthCheckProgram after 60 s; the probe gets this much of it by default.
BUDGET_S = 40.0
SCONTROL_TIMEOUT_S = 10.0
REASON_PREFIX = "gpudc-probe "
ACTIONS = ("none", "drain", "reset_gpu", "reboot", "reprovision", "rma")
SEVERITIES = ("info", "warn", "fail")


def _finding(check: str, severity: str, action: str, message: str, gpu: int | None = None,
             evidence: str = "") -> dict[str, Any]:
    return {"check": check, "severity": severity, "action": action, "message": message, "gpu": gpu,
            "evidence": evidence[:200]}


def xid_rule(catalog: dict[str, Any], code: int) -> tuple[str, str, str]:
    """(name, severity, action) of an XID in the catalog document (catalog/validation/xid.yaml as
    JSON): a row's own severity/action, else its resolution's, else the catalog default."""
    rows = catalog.get("xids") or {}
    row = rows.get(str(code)) or rows.get(code)
    default = catalog.get("default") or {"severity": "warn", "action": "none"}
    if not isinstance(row, dict):
        return "UNKNOWN", str(default.get("severity", "warn")), str(default.get("action", "none"))
    base = (catalog.get("resolutions") or {}).get(row.get("resolution"), default)
    return (str(row.get("name", "")), str(row.get("severity", base.get("severity", "warn"))),
            str(row.get("action", base.get("action", "none"))))


def judge(facts: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The quick node-local verdict: {verdict, action, reason, findings}."""
    findings: list[dict[str, Any]] = []
    gpus = [g for g in facts.get("gpus") or [] if isinstance(g, dict)]
    catalog = config.get("xid_catalog") or {}
    window = float(config.get("xid_window_s") or 7200)
    now = float(facts.get("time") or time.time())
    boot = facts.get("boot_time")
    by_bdf = {str(g.get("bdf") or "").lower(): g.get("index") for g in gpus}
    seen: set[tuple[int, str]] = set()
    for ev in facts.get("xids") or []:
        t = ev.get("time")
        if t is not None and (t < now - window or (boot is not None and t < boot)):
            continue  # outside the window, or handled by the reboot since
        code, dev = int(ev.get("xid", 0)), str(ev.get("dev", "")).lower()
        if (code, dev) in seen:
            continue
        seen.add((code, dev))
        name, severity, action = xid_rule(catalog, code)
        if severity not in SEVERITIES or action not in ACTIONS:
            severity, action = "warn", "none"
        gpu = next((i for bdf, i in by_bdf.items() if bdf and dev and bdf.startswith(dev)), None)
        where = f"GPU {gpu}" if gpu is not None else f"PCI {dev}"
        findings.append(_finding(f"xid:{code}", severity, action, f"XID {code} on {where} ({name})", gpu,
                                 f"NVRM: Xid (PCI:{dev}): {code}, {ev.get('text', '')}"))
    for gpu in gpus:
        if gpu.get("lost"):
            findings.append(_finding("gpu_lost", "fail", "reboot", f"GPU {gpu.get('index')} is lost",
                                     gpu.get("index")))
    expected = config.get("gpu_count")
    count = facts.get("gpu_count")
    if isinstance(expected, int) and isinstance(count, int) and count < expected:
        findings.append(_finding("gpu_count", "fail", "reboot", f"{count} of {expected} GPUs visible"))
    if facts.get("hung"):
        calls = ", ".join(str(h.get("call", h)) if isinstance(h, dict) else str(h) for h in facts["hung"][:3])
        findings.append(_finding("nvml_hung", "fail", "reboot", f"NVML calls hung: {calls}"))
    if facts.get("source") in (None, "none") and not gpus and isinstance(expected, int) and expected > 0:
        findings.append(_finding("nvml_unavailable", "fail", "reprovision", "neither NVML nor nvidia-smi answered"))
    fails = [f for f in findings if f["severity"] == "fail"]
    warns = [f for f in findings if f["severity"] == "warn"]
    verdict = "fail" if fails else "warn" if warns else "pass"
    action = max((f["action"] for f in findings), key=ACTIONS.index, default="none")
    reason = ""
    if fails:
        more = f"; +{len(fails) - 1} more" if len(fails) > 1 else ""
        reason = f"{REASON_PREFIX}{fails[0]['message']}, action {action}{more}"
    return {"verdict": verdict, "action": action, "reason": reason, "findings": findings}


def probe(level: str, budget: float, call_timeout: float, kern_log: str,
          packages: list[str] | None = None) -> dict[str, Any] | None:
    """The probe's facts, or None when it did not finish within `budget` seconds. `packages`: the
    profile's package names, whose installed versions the facts carry (as over SSH)."""
    box: dict[str, Any] = {}
    argv = ["--level", level, "--call-timeout", f"{call_timeout:g}", "--kern-log", kern_log]
    names = [str(p) for p in packages or [] if p and "," not in str(p)]
    if names:
        argv += ["--packages", ",".join(names)]
    args = probe_script.parse_args(argv)

    def target() -> None:
        box["facts"] = probe_script.collect(args)

    thread = threading.Thread(target=target, name="gpudc-probe", daemon=True)
    thread.start()
    thread.join(budget)
    facts: dict[str, Any] | None = box.get("facts")
    return facts


def _atomic_write(path: str, text: str, mode: int = 0o644) -> None:
    # gpudc.files.write_atomic's way, repeated: this file is installed on nodes on its own (stdlib only)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".gpudc-probe.", dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def prometheus(doc: dict[str, Any]) -> str:
    node = _label(doc["node"])
    lines = [
        "# HELP gpudc_probe_verdict The node-local verdict of gpudc-probe (1 for the current one).",
        "# TYPE gpudc_probe_verdict gauge",
    ]
    for verdict in ("pass", "warn", "fail"):
        lines.append(f'gpudc_probe_verdict{{node="{node}",verdict="{verdict}"}} {int(doc["verdict"] == verdict)}')
    lines += [
        "# HELP gpudc_probe_findings Findings of the last run by severity.",
        "# TYPE gpudc_probe_findings gauge",
    ]
    for severity in SEVERITIES:
        n = sum(1 for f in doc["findings"] if f["severity"] == severity)
        lines.append(f'gpudc_probe_findings{{node="{node}",severity="{severity}"}} {n}')
    lines += [
        "# HELP gpudc_probe_last_run_timestamp_seconds When gpudc-probe last judged this node.",
        "# TYPE gpudc_probe_last_run_timestamp_seconds gauge",
        f'gpudc_probe_last_run_timestamp_seconds{{node="{node}"}} {doc["time"]:.3f}',
        "# HELP gpudc_probe_duration_seconds How long the last run took.",
        "# TYPE gpudc_probe_duration_seconds gauge",
        f'gpudc_probe_duration_seconds{{node="{node}"}} {doc["duration_s"]:.3f}',
        "# HELP gpudc_probe_drained 1 when this run drained the node.",
        "# TYPE gpudc_probe_drained gauge",
        f'gpudc_probe_drained{{node="{node}"}} {int(doc["drain"] == "drained")}',
    ]
    return "\n".join(lines) + "\n"


def _scontrol(args: list[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=SCONTROL_TIMEOUT_S,
                              check=False)
    except FileNotFoundError:
        return 127, "scontrol is not installed"
    except subprocess.TimeoutExpired:
        return 124, f"scontrol did not answer within {SCONTROL_TIMEOUT_S:g}s"
    return proc.returncode, (proc.stdout if proc.returncode == 0 else proc.stderr or proc.stdout).strip()


def drain_self(node: str, reason: str) -> str:
    """Drain this node with `reason` unless it is drained already: drained | already | error: ..."""
    rc, out = _scontrol(["--oneliner", "show", "node", node])
    if rc != 0:
        return f"error: {out[:200]}"
    state = next((w.split("=", 1)[1] for w in out.split() if w.startswith("State=")), "")
    if "DRAIN" in state.upper():
        return "already"
    clean = " ".join(reason.replace('"', "'").split())[:200]
    rc, out = _scontrol(["update", f"NodeName={node}", "State=DRAIN", f"Reason={clean}"])
    return "drained" if rc == 0 else f"error: {out[:200]}"


def health(args: argparse.Namespace) -> int:
    started = time.time()
    try:
        with open(args.config) as fh:
            config: dict[str, Any] = json.load(fh)
    except FileNotFoundError:
        config = {}
    except (OSError, ValueError) as exc:
        print(f"gpudc-probe: {args.config}: {exc}", file=sys.stderr)
        config = {}
    node = str(config.get("node") or socket.gethostname().split(".")[0])
    budget = float(args.budget or config.get("budget_s") or BUDGET_S)
    facts = probe(str(config.get("level") or "quick"), budget, float(config.get("call_timeout_s") or 5.0),
                  args.kern_log, list(config.get("packages") or []))
    if facts is None:
        result = {"verdict": "fail", "action": "reboot",
                  "reason": f"{REASON_PREFIX}the probe did not finish within {budget:g}s (hung driver?)",
                  "findings": [_finding("probe.timeout", "fail", "reboot",
                                        f"the probe did not finish within {budget:g}s")]}
    else:
        result = judge(facts, config)
    doc: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "node": node, "site": config.get("site"),
        "time": started, "duration_s": round(time.time() - started, 3),
        "mode": "prolog" if args.prolog else "health", **result, "drain": "none", "facts": facts,
    }
    drain = config.get("drain", True) and not args.no_drain
    if result["verdict"] == "fail" and drain:
        doc["drain"] = drain_self(node, str(result["reason"]))
    state_dir = args.state_dir or str(config.get("state_dir") or STATE_DIR)
    textfile_dir = args.textfile_dir or str(config.get("textfile_dir") or TEXTFILE_DIR)
    _atomic_write(os.path.join(state_dir, "verdict.json"), json.dumps(doc, sort_keys=True, default=str) + "\n")
    if textfile_dir != "-":
        _atomic_write(os.path.join(textfile_dir, "gpudc_probe.prom"), prometheus(doc))
    print(f"gpudc-probe: {node}: {result['verdict']}" + (f" ({result['reason']})" if result["reason"] else "")
          + (f"; drain: {doc['drain']}" if doc["drain"] != "none" else ""), file=sys.stderr)
    return 1 if result["verdict"] == "fail" else 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpudc-probe", description="gpudc's node probe; --health: Slurm's health check")
    p.add_argument("--health", action="store_true", required=True)
    p.add_argument("--prolog", action="store_true", help="run as the job Prolog (recorded in the verdict)")
    p.add_argument("--config", default=CONFIG, help=f"expectations and catalog (default {CONFIG})")
    p.add_argument("--no-drain", action="store_true", help="judge and record, but never drain")
    p.add_argument("--budget", type=float, help=f"seconds the probe may take (default {BUDGET_S:g})")
    p.add_argument("--state-dir", help=f"where verdict.json goes (default {STATE_DIR})")
    p.add_argument("--textfile-dir", help=f"Prometheus textfile dir, '-' for none (default {TEXTFILE_DIR})")
    p.add_argument("--kern-log", default=probe_script.KERN_LOG)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--source-dir"]:  # for the gpudc_probe role: where these modules are
        print(os.path.dirname(os.path.realpath(__file__)))
        return
    if "--health" not in argv:
        probe_script.main(argv)
        return
    code = health(parse_args(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # a probe thread stuck in NVML must not keep the health check alive


if __name__ == "__main__":
    main()
