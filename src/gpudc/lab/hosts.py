"""Lab hosts: an overlay per host on the lab tmpfs, booted under systemd-nspawn in its own netns.

A host's record (in the state file) names its overlay dirs, namespace, veth, nspawn PID, power
state and faults. Everything a freshly installed node has that differs per host is written into
its overlay by `customize()`; `reimage()` throws the overlay away and makes a fresh one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from gpudc import secrets
from gpudc.errors import GpudcError
from gpudc.lab import net, services
from gpudc.lab import state as st

NVML_STATE_PATH = "etc/gpudc-lab/nvml-state.json"
LIB_DIR = "usr/lib/x86_64-linux-gnu"
PY_DIST = "usr/lib/python3/dist-packages"
APT_PORT = 3142
REPO_PORT = 8080
BOOT_TIMEOUT_S = 60.0
#: systemd-networkd's file for a host on the lab's fabric: eth0 by DHCP (through its leaf's relay).
DHCP_NETWORK_FILE = "etc/systemd/network/10-gpudc-lab.network"
DHCP_NETWORK = """\
# gpudc lab: the planned address comes from Kea, relayed by this host's leaf (gpudc.lab.fabric).
[Match]
Name=eth0

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
ClientIdentifier=mac
UseDNS=no
UseNTP=no
UseDomains=no
"""
#: cloud-init's datasource config of a reimaged host: its own seed URL (NoCloud seedfrom).
SEED_CONFIG_FILE = "etc/cloud/cloud.cfg.d/90-gpudc-seed.cfg"
CLOUD_INIT_DISABLED = "etc/cloud/cloud-init.disabled"


def fs_dir() -> Path:
    """The lab tmpfs: base tree, per-host overlays, built artefacts."""
    return st.run_dir() / "fs"


def base_dir() -> Path:
    return fs_dir() / "base"


def host_dir(node: str) -> Path:
    return fs_dir() / "hosts" / node


def root_dir(node: str) -> Path:
    return host_dir(node) / "root"


def artefact_dir() -> Path:
    return fs_dir() / "artefacts"


def log_dir() -> Path:
    return st.run_dir() / "logs"


# --- mounts ---------------------------------------------------------------------------------


def _run(cmd: list[str], timeout: float = 60) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise GpudcError(f"lab: `{' '.join(cmd)}` failed: {result.stderr.strip()}")


def mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mounts") as fh:
        return any(line.split()[1] == target for line in fh)


def lab_mounts() -> list[str]:
    """Every mount point under the run dir (deepest first)."""
    prefix = str(st.run_dir())
    with open("/proc/self/mounts") as fh:
        points = [line.split()[1] for line in fh]
    inside = [p for p in points if p == prefix or p.startswith(prefix + "/")]
    return sorted(set(inside), key=len, reverse=True)


def mount_tmpfs(size: str = "75%") -> None:
    path = fs_dir()
    path.mkdir(parents=True, exist_ok=True)
    if not mounted(path):
        _run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "gpudc-lab", str(path)])


def mount_overlay(node: str) -> None:
    hdir = host_dir(node)
    for sub in ("upper", "work", "root"):
        (hdir / sub).mkdir(parents=True, exist_ok=True)
    if not mounted(hdir / "root"):
        opts = f"lowerdir={base_dir()},upperdir={hdir / 'upper'},workdir={hdir / 'work'}"
        _run(["mount", "-t", "overlay", "overlay", "-o", opts, str(hdir / "root")])


def unmount_overlay(node: str) -> None:
    root = root_dir(node)
    if mounted(root):
        # Lazy: a container that is still dying may hold it a moment longer.
        _run(["umount", "-l", str(root)])


def unmount_all() -> None:
    for point in lab_mounts():
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=60)


# --- per-host files -----------------------------------------------------------------------------


def write_into(root: Path, rel: str, content: str | bytes, mode: int = 0o644,
               owner: tuple[int, int] | None = None) -> None:
    """A file in a lab root filesystem (replacing what is there, link or not), with mode and owner."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, *owner)



def _copy(src: Path, root: Path, rel: str, mode: int = 0o644) -> None:
    write_into(root, rel, src.read_bytes(), mode)


def machine_id(site: str, node: str) -> str:
    return hashlib.sha256(f"gpudc-lab/{site}/{node}".encode()).hexdigest()[:32]


def host_key_for(lab: dict[str, Any], rec: dict[str, Any]) -> tuple[str, str]:
    """(private key text, public key line) the host presents; a fresh one under host-key-changed."""
    if "host-key-changed" in rec.get("faults", []):
        other = st.run_dir() / "keys" / f"{rec['name']}_changed_ed25519"
        if not other.exists():
            other.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{rec['name']}", "-f", str(other)],
                check=True, capture_output=True, timeout=30,
            )
        return other.read_text(), Path(f"{other}.pub").read_text().strip()
    private, public = secrets.host_key(lab["site"], rec["name"])
    return private.read_text(), public


def write_identity(lab: dict[str, Any], rec: dict[str, Any]) -> None:
    """Host key and authorized controller key (also used when host-key-changed toggles)."""
    root = root_dir(rec["name"])
    private, public = host_key_for(lab, rec)
    write_into(root, "etc/ssh/ssh_host_ed25519_key", private, 0o600)
    write_into(root, "etc/ssh/ssh_host_ed25519_key.pub", public + "\n", 0o644)
    _, controller_pub = secrets.controller_key(lab["site"])
    write_into(root, "root/.ssh/authorized_keys", controller_pub + "\n", 0o600)


def write_gpu_state(rec: dict[str, Any], gpu: dict[str, Any]) -> None:
    write_into(root_dir(rec["name"]), NVML_STATE_PATH, json.dumps(gpu, indent=1, sort_keys=True) + "\n")


def append_kernel_log(rec: dict[str, Any], lines: list[str]) -> None:
    if not lines:
        return
    path = root_dir(rec["name"]) / "var/log/kern.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        for line in lines:
            fh.write(line.rstrip("\n") + "\n")


def install_shims(rec: dict[str, Any]) -> None:
    """The stand-in measuring tools (lab/shims, built into the artefacts) into /usr/local/bin."""
    shims = artefact_dir() / "shims"
    if shims.is_dir():
        for tool in sorted(shims.iterdir()):
            _copy(tool, root_dir(rec["name"]), f"usr/local/bin/{tool.name}", 0o755)


def write_seed_config(rec: dict[str, Any], seed_url: str) -> None:
    """Turn cloud-init on with this host's own seed URL: it fetches and applies the rendered seed."""
    root = root_dir(rec["name"])
    # block YAML as cloud-init's own docs write it: ds-identify (a shell script) reads these lines
    # itself to decide whether cloud-init runs at all. Mode 0600: the token keeps the seed this node's.
    config = ("# gpudc lab: this node's seed (its rendered user-data)\n"
              "datasource_list: [NoCloud]\n"
              f"datasource:\n  NoCloud:\n    seedfrom: {seed_url}\n")
    write_into(root, SEED_CONFIG_FILE, config, 0o600)
    with contextlib.suppress(FileNotFoundError):
        (root / CLOUD_INIT_DISABLED).unlink()


def trust_ca(rec: dict[str, Any], pem: str) -> None:
    """Add a CA to the host's trust store (the bundle OpenSSL and Python's requests read), as an
    installer image built with the site's CA has it."""
    root = root_dir(rec["name"])
    bundle = root / "etc/ssl/certs/ca-certificates.crt"
    current = bundle.read_text() if bundle.exists() else ""
    if pem.strip() not in current:
        write_into(root, "usr/local/share/ca-certificates/gpudc-site-boot-ca.crt", pem)
        write_into(root, "etc/ssl/certs/ca-certificates.crt", current.rstrip("\n") + "\n" + pem)


def customize(lab: dict[str, Any], rec: dict[str, Any], gpu: dict[str, Any], seed_url: str | None = None) -> None:
    """Write what makes a fresh overlay this host: identity, network names, apt, simulated GPU.

    With a seed URL (a reimage) the identity is not written: cloud-init fetches the node's rendered
    seed from the boot server and applies it (hostname, authorized key, pre-seeded host key). On the
    lab's fabric eth0 takes its address by DHCP."""
    root = root_dir(rec["name"])
    node = rec["name"]
    if seed_url is None:
        write_into(root, "etc/hostname", node + "\n")
        hosts = ["127.0.0.1 localhost", f"127.0.1.1 {node}.{lab['domain']} {node}" if lab.get("domain") else ""]
        hosts += [f"{h['address']} {h['name']}.{lab['domain']} {h['name']}" for h in lab["hosts"]]
        hosts.append(f"{lab['bridge_address']} gpudc-lab-controller")
        write_into(root, "etc/hosts", "\n".join(line for line in hosts if line) + "\n")
        write_identity(lab, rec)
    else:
        write_seed_config(rec, seed_url)
    if lab.get("fabric"):
        write_into(root, DHCP_NETWORK_FILE, DHCP_NETWORK)
    write_into(root, "etc/machine-id", machine_id(lab["site"], node) + "\n", 0o444)
    bridge = lab["bridge_address"]
    write_into(
        root,
        "etc/apt/sources.list",
        f"deb http://{bridge}:{APT_PORT}/debian bookworm main\n"
        f"deb http://{bridge}:{APT_PORT}/debian bookworm-updates main\n"
        f"deb http://{bridge}:{APT_PORT}/deb.debian.org/debian-security bookworm-security main\n",
    )
    art = artefact_dir()
    if (art / "libnvidia-ml.so.1").exists():
        _copy(art / "libnvidia-ml.so.1", root, f"{LIB_DIR}/libnvidia-ml.so.1", 0o755)
        with contextlib.suppress(FileNotFoundError):
            (root / LIB_DIR / "libnvidia-ml.so").unlink()
        (root / LIB_DIR / "libnvidia-ml.so").symlink_to("libnvidia-ml.so.1")
    if (art / "pynvml.py").exists():
        _copy(art / "pynvml.py", root, f"{PY_DIST}/pynvml.py")
    if (art / "lspci").exists():
        _copy(art / "lspci", root, "usr/local/bin/lspci", 0o755)
    install_shims(rec)
    if gpu:
        write_gpu_state(rec, gpu)
    write_into(root, "var/log/kern.log", "", 0o640)
    subprocess.run(["ldconfig", "-r", str(root)], capture_output=True, timeout=60, check=False)


# --- processes ------------------------------------------------------------------------------


def _is_nspawn(pid: int | None, node: str) -> bool:
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return (
        bool(cmdline)
        and cmdline[0].endswith(b"systemd-nspawn")
        and f"--directory={root_dir(node)}".encode() in cmdline
    )


def running(rec: dict[str, Any]) -> bool:
    return _is_nspawn(rec.get("pid"), rec["name"])


def nspawn_command(rec: dict[str, Any]) -> list[str]:
    node = rec["name"]
    return [
        "systemd-nspawn",
        "--register=no",
        "--keep-unit",
        "--boot",
        "--quiet",
        f"--directory={root_dir(node)}",
        f"--machine={node}",
        f"--network-namespace-path={net.netns_path(node)}",
        # its own namespace's eth0 only: systemd-networkd (DHCP on the lab's fabric) needs it
        "--capability=CAP_NET_ADMIN",
        "--console=passive",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
        "--kill-signal=SIGRTMIN+3",
    ]


def start(rec: dict[str, Any]) -> None:
    """Boot the host's container, detached (reparented to init), and record its PID."""
    if running(rec):
        return
    log_dir().mkdir(parents=True, exist_ok=True)
    log = log_dir() / f"{rec['name']}.log"
    rec["pid"] = services.spawn(nspawn_command(rec), log)
    rec["booted_at"] = time.time()


def container_init(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return None
    return int(children[0]) if children else None


def stop(rec: dict[str, Any], force: bool = False, timeout: float = 20.0) -> None:
    """Shut the host down: orderly (SIGTERM to nspawn) or at once (SIGKILL to the container's init)."""
    pid = rec.get("pid")
    if not _is_nspawn(pid, rec["name"]):
        rec["pid"] = None
        return
    assert pid is not None
    if force:
        init = container_init(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(init or pid, signal.SIGKILL)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _is_nspawn(pid, rec["name"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _is_nspawn(pid, rec["name"]):
        init = container_init(pid)
        for victim in (init, pid):
            if victim:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _is_nspawn(pid, rec["name"]) and time.monotonic() < deadline:
            time.sleep(0.05)
    rec["pid"] = None


def ssh_ready(address: str, timeout: float = 1.0) -> bool:
    """True when sshd answers with its banner on address:22."""
    try:
        with socket.create_connection((address, 22), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def wait_ready(recs: list[dict[str, Any]], timeout: float = BOOT_TIMEOUT_S) -> list[str]:
    """Wait until every host's sshd answers; returns the names of those that did not."""
    pending = {r["name"]: r for r in recs}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name, rec in list(pending.items()):
            if not running(rec):
                continue
            if ssh_ready(rec["address"], timeout=0.5):
                del pending[name]
        if pending:
            time.sleep(0.1)
    return sorted(pending)


def wipe_overlay(node: str) -> None:
    """Unmount and throw away a host's overlay (tmpfs: fast)."""
    unmount_overlay(node)
    hdir = host_dir(node)
    for sub in ("upper", "work"):
        shutil.rmtree(hdir / sub, ignore_errors=True)


def nspawn_leftovers() -> list[Path]:
    base = Path("/run/systemd/nspawn")
    return [base] if base.exists() else []


def exec_in(rec: dict[str, Any], cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command inside a running host (its namespaces, via nsenter; does not need sshd)."""
    pid = rec.get("pid")
    init = container_init(pid) if pid and running(rec) else None
    if init is None:
        raise GpudcError(f"lab: {rec['name']} is powered off")
    return subprocess.run(
        ["nsenter", f"--target={init}", "--mount", "--uts", "--ipc", "--net", "--pid", "--", *cmd],
        capture_output=True, text=True, timeout=timeout,
    )
