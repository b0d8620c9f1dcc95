"""Run a playbook on the plan's nodes through ansible-runner.

Each run gets its own private data dir (inventory, artifacts, summary), kept under the site's
state dir (`$XDG_STATE_HOME/gpudc/<site>/provision/<time>-<playbook>`) unless `artifacts_dir`
names one. Ansible's own state (`ANSIBLE_HOME`, the fact cache) lives in the site's state dir,
never in `$HOME`. SSH always checks host keys against the given known_hosts file. One failing or
unreachable host never stops the others; the result says which.

`tuned=True` (the default) is what gpudc runs: Mitogen's linear strategy (one persistent Python
per host over one SSH connection; `mitogen=False` keeps Ansible's own SSH connection with
pipelining), SSH multiplexing with a fast key exchange, a persistent fact cache with
`gathering = smart` (kept across runs in the site's state dir), forks sized to the hosts.
`tuned=False` gives Ansible's defaults (the benchmark's baseline).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from gpudc.errors import GpudcError, InputError
from gpudc.plan.types import Plan
from gpudc.project import site_state_dir
from gpudc.provision.inventory import write_inventory
from gpudc.resources import shipped

if TYPE_CHECKING:
    from gpudc.access import SiteAccess

PLAYBOOKS = ("site.yml", "upgrade.yml", "reprovision.yml")
EventHandler = Callable[[dict[str, Any]], None]

#: Per-task and connection timeouts (seconds): every remote operation is bounded.
TASK_TIMEOUT_S = 1800
CONNECT_TIMEOUT_S = 10


class ProvisionStopped(GpudcError):
    """The run passed its deadline and ansible-playbook was stopped. Exit 3 (not finished)."""

    exit_code = 3


def _stop_leftovers(run_dir: Path, grace_s: float = 5.0) -> None:
    """After a stop, ansible-playbook's forked workers can outlive it for a moment: end those
    of this run (their command line names this run's private inventory, unique to it)."""
    marker = str(run_dir / "inventory").encode()
    deadline = time.monotonic() + grace_s
    while True:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL if time.monotonic() > deadline - grace_s / 2 else signal.SIGTERM)
        if time.monotonic() > deadline:
            return
        time.sleep(0.1)


def playbook_dir() -> Path:
    override = os.environ.get("GPUDC_PLAYBOOKS")
    return Path(override) if override else shipped("playbooks")


@dataclass
class ProvisionResult:
    """Per-host counts of one run, its ansible rc and where its artifacts are."""

    hosts: dict[str, dict[str, Any]]
    rc: int
    playbook: str = "site.yml"
    artifacts_dir: Path | None = None
    duration_s: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def failed_hosts(self) -> list[str]:
        return sorted(h for h, s in self.hosts.items() if s["failed"] and not s["unreachable"])

    @property
    def unreachable_hosts(self) -> list[str]:
        return sorted(h for h, s in self.hosts.items() if s["unreachable"])

    @property
    def exit_code(self) -> int:
        """0 all converged, 3 some host unreachable, 1 some host failed (or ansible itself did)."""
        if self.unreachable_hosts:
            return 3
        if self.failed_hosts or self.rc != 0:
            return 1
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"hosts": {h: dict(s) for h, s in sorted(self.hosts.items())}, "rc": self.rc}


def _state_root(site: str) -> Path:
    root = site_state_dir(site)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return root


def ansible_home(site: str) -> Path:
    path = _state_root(site) / "ansible"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def default_artifacts_dir(site: str, playbook: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = _state_root(site) / "provision"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Path(tempfile.mkdtemp(prefix=f"{stamp}-{playbook.removesuffix('.yml')}-", dir=base))


def mitogen_environment() -> dict[str, str]:
    """Mitogen for Ansible's linear strategy: a task becomes a call into a Python that stays up
    on the host, instead of a new interpreter and module upload per task. The same ssh_args,
    host-key checking and timeouts apply; linear keeps the one-node-per-NVLink-domain waves (a
    free strategy would not)."""
    import ansible_mitogen

    strategies = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    return {"ANSIBLE_STRATEGY_PLUGINS": str(strategies), "ANSIBLE_STRATEGY": "mitogen_linear"}


def environment(
    *,
    site: str,
    ssh_key: Path | None,
    known_hosts: Path | None,
    hosts: int,
    tuned: bool,
    run_dir: Path,
    mitogen: bool = True,
    jump: str | None = None,
) -> dict[str, str]:
    """The ANSIBLE_* environment of a run (no secret: key and known_hosts are paths)."""
    home = ansible_home(site)
    venv_bin = str(Path(sys.executable).parent)
    # One control dir per run: a multiplexed session reuses a master without checking the host
    # key again, so masters must never outlive the known_hosts they were checked against.
    control_dir = Path(tempfile.mkdtemp(prefix="gpudc-cp-"))
    ssh_args = [
        "-o StrictHostKeyChecking=yes",
        "-o GlobalKnownHostsFile=/dev/null",
        "-o BatchMode=yes",
        f"-o ConnectTimeout={CONNECT_TIMEOUT_S}",
        "-o ServerAliveInterval=15",
        "-o ServerAliveCountMax=4",
    ]
    if known_hosts is not None:
        ssh_args.insert(0, f"-o UserKnownHostsFile={known_hosts}")
    if jump:
        ssh_args.append(f"-o ProxyJump={jump}")
    env = {
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(run_dir / "tmp"),
        "ANSIBLE_ROLES_PATH": str(playbook_dir() / "roles"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_TIMEOUT": str(CONNECT_TIMEOUT_S),
        "ANSIBLE_TASK_TIMEOUT": str(TASK_TIMEOUT_S),
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_SYSTEM_WARNINGS": "False",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_FORCE_COLOR": "False",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
        "ANSIBLE_SSH_RETRIES": "1",
    }
    if ssh_key is not None:
        env["ANSIBLE_PRIVATE_KEY_FILE"] = str(ssh_key)
    if tuned:
        ssh_args += [
            "-o ControlMaster=auto",
            "-o ControlPersist=120s",
            "-o KexAlgorithms=curve25519-sha256,curve25519-sha256@libssh.org",
        ]
        env.update(
            {
                "ANSIBLE_PIPELINING": "True",
                "ANSIBLE_GATHERING": "smart",
                "ANSIBLE_CACHE_PLUGIN": "jsonfile",
                "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(home / "facts"),
                "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "86400",
                "ANSIBLE_FORKS": str(max(5, min(hosts, 64))),
            }
        )
        if mitogen:
            env.update(mitogen_environment())
    else:
        # Ansible's defaults: no pipelining, no fact cache, 5 forks, its default SSH multiplexing.
        ssh_args = ["-C", "-o ControlMaster=auto", "-o ControlPersist=60s", *ssh_args]
        env.update({"ANSIBLE_PIPELINING": "False", "ANSIBLE_GATHERING": "implicit", "ANSIBLE_FORKS": "5"})
    env["ANSIBLE_SSH_ARGS"] = " ".join(ssh_args)
    return env


def _write_access_host_vars(plan: Plan, access: SiteAccess, folder: Path) -> None:
    """`ansible_host` of the nodes that the site's access reaches at another address than planned."""
    for node in plan.nodes:
        address = access.addresses.get(node.name, node.ssh_address)
        path = folder / f"{node.name}.yml"
        if address != node.ssh_address:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump({"ansible_host": address}))
        else:
            path.unlink(missing_ok=True)


def clear_fact_cache(site: str, hosts: list[str] | None = None) -> None:
    """Forget cached facts (all, or of some hosts): after a reimage they describe the old image."""
    cache = ansible_home(site) / "facts"
    if not cache.exists():
        return
    if hosts is None:
        shutil.rmtree(cache, ignore_errors=True)
        return
    for host in hosts:
        (cache / host).unlink(missing_ok=True)


def _scrub_artifacts(run_dir: Path) -> None:
    """ansible-runner records the whole process environment in `command`: keep only ours."""
    for command in (run_dir / "artifacts").glob("*/command"):
        try:
            data = json.loads(command.read_text())
        except (OSError, ValueError):
            continue
        env = data.get("env") or {}
        data["env"] = {k: v for k, v in env.items() if k.startswith("ANSIBLE_") or k == "PATH"}
        command.write_text(json.dumps(data))
    shutil.rmtree(run_dir / "env", ignore_errors=True)


def _failure_text(res: dict[str, Any]) -> str:
    for key in ("msg", "stderr", "reason"):
        value = res.get(key)
        if value:
            return str(value).strip().splitlines()[-1][:400] if str(value).strip() else ""
    return "failed"


def summary_table(result: ProvisionResult) -> str:
    """A plain-text per-host summary (saved with the artifacts; the CLI prints a rich one)."""
    lines = [f"{'host':<24} {'ok':>5} {'changed':>8} {'failed':>7} {'unreachable':>12}"]
    for host, s in sorted(result.hosts.items()):
        lines.append(
            f"{host:<24} {s['ok']:>5} {s['changed']:>8} {s['failed']:>7} {('yes' if s['unreachable'] else 'no'):>12}"
        )
    lines.append(f"rc={result.rc} exit={result.exit_code} playbook={result.playbook} {result.duration_s:.1f}s")
    return "\n".join(lines) + "\n"


def run_provision(
    plan: Plan,
    *,
    playbook: str = "site.yml",
    limit: str | None = None,
    check: bool = False,
    extra_vars: dict[str, Any] | None = None,
    ssh_key: Path | None = None,
    known_hosts: Path | None = None,
    artifacts_dir: Path | None = None,
    tuned: bool = True,
    mitogen: bool = True,
    event_handler: EventHandler | None = None,
    diff: bool = False,
    deadline_s: float | None = None,
    access: SiteAccess | None = None,
) -> ProvisionResult:
    """Run `playbook` (site.yml, upgrade.yml, reprovision.yml) on the plan's nodes.

    `deadline_s`: stop ansible-playbook (and its connections) once the run has taken that long
    and raise ProvisionStopped, so a caller's step timeout never leaves a run going behind it.
    `access` (gpudc.access): the site's SSH identity, known_hosts, user, port, jump host, node
    addresses and provisioning variables; explicit `ssh_key`/`known_hosts`/`extra_vars` win."""
    import ansible_runner

    if playbook not in PLAYBOOKS:
        raise InputError(f"--playbook: {playbook!r} is not one of {', '.join(PLAYBOOKS)}")
    book = playbook_dir() / playbook
    if not book.exists():
        raise GpudcError(f"playbook {book} is missing")
    if access is not None:
        ssh_key = ssh_key or access.ssh_identity
        known_hosts = known_hosts or access.known_hosts
        extra_vars = {**access.provision_vars, **(extra_vars or {})}
    if known_hosts is not None and not Path(known_hosts).exists():
        raise InputError(f"known_hosts: {known_hosts} does not exist")
    run_dir = Path(artifacts_dir) if artifacts_dir else default_artifacts_dir(plan.site.name, playbook)
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (run_dir / "tmp").mkdir(exist_ok=True)
    (run_dir / "project").mkdir(exist_ok=True)
    write_inventory(plan, run_dir / "inventory" / "hosts.yml")
    if access is not None:
        _write_access_host_vars(plan, access, run_dir / "inventory" / "host_vars")
    env = environment(
        site=plan.site.name, ssh_key=ssh_key, known_hosts=known_hosts, hosts=len(plan.nodes),
        tuned=tuned, run_dir=run_dir, mitogen=mitogen,
        jump=access.jump if access else None,
    )
    if access is not None:
        env["ANSIBLE_REMOTE_USER"] = access.ssh_user
        env["ANSIBLE_REMOTE_PORT"] = str(access.ssh_port)
    cmdline: list[str] = []
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")

    failures: list[dict[str, str]] = []

    def on_event(event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        if event.get("event") in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            failures.append(
                {
                    "host": str(data.get("host", "")),
                    "task": str(data.get("task", "")),
                    "kind": "unreachable" if event["event"] == "runner_on_unreachable" else "failed",
                    "msg": _failure_text(data.get("res") or {}),
                }
            )
        if event_handler is not None:
            event_handler(event)
        return True

    started = time.monotonic()
    stop_at = None if deadline_s is None else started + deadline_s
    runner = ansible_runner.run(
        private_data_dir=str(run_dir),
        playbook=str(book),
        limit=limit,
        extravars=dict(extra_vars or {}),
        envvars=env,
        cmdline=" ".join(cmdline) or None,
        quiet=True,
        ident="run",
        rotate_artifacts=0,
        suppress_env_files=True,
        # the fact cache is ours (ANSIBLE_CACHE_PLUGIN* in envvars, kept across runs); with its
        # default "jsonfile" ansible-runner would point it at a fresh folder of each run
        fact_cache_type="gpudc",
        event_handler=on_event,
        cancel_callback=None if stop_at is None else (lambda: time.monotonic() > stop_at),
        timeout=TASK_TIMEOUT_S * 4,
    )
    duration = time.monotonic() - started
    shutil.rmtree(env["ANSIBLE_SSH_CONTROL_PATH_DIR"], ignore_errors=True)
    _scrub_artifacts(run_dir)
    if runner.status == "canceled":
        _stop_leftovers(run_dir)
        why = f"at its {deadline_s:g}s deadline" if deadline_s is not None else "on an interrupt"
        raise ProvisionStopped(f"{playbook}: stopped ansible-playbook {why} (after {duration:.0f}s; artifacts {run_dir})")
    stats = runner.stats or {}
    if runner.rc == 127 or not stats:
        tail = (run_dir / "artifacts" / "run" / "stdout")
        text = tail.read_text(errors="replace")[-2000:] if tail.exists() else ""
        raise GpudcError(f"ansible-playbook did not run (rc={runner.rc}, status={runner.status}): {text.strip()}")
    names = set()
    for key in ("ok", "changed", "failures", "dark", "skipped", "processed", "ignored", "rescued"):
        names |= set((stats.get(key) or {}).keys())
    hosts = {
        name: {
            "ok": int(stats.get("ok", {}).get(name, 0)),
            "changed": int(stats.get("changed", {}).get(name, 0)),
            "failed": int(stats.get("failures", {}).get(name, 0)),
            "unreachable": name in (stats.get("dark") or {}),
        }
        for name in sorted(names)
    }
    result = ProvisionResult(
        hosts=hosts, rc=int(runner.rc), playbook=playbook, artifacts_dir=run_dir,
        duration_s=round(duration, 2), failures=failures,
    )
    (run_dir / "summary.json").write_text(
        json.dumps({**result.to_dict(), "playbook": playbook, "limit": limit, "check": check,
                    "duration_s": result.duration_s, "failures": failures}, indent=2) + "\n"
    )
    (run_dir / "summary.txt").write_text(summary_table(result))
    return result
