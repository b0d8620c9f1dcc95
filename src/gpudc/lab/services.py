"""Services the lab runs on the bridge: apt-cacher-ng, the stand-in NVIDIA apt repo, the BMCs.

Each is a process the lab starts detached, records by PID in the state file and ends by that
PID on `lab down`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import signal
import subprocess
import sys
import time
from email.utils import formatdate
from pathlib import Path

from gpudc.errors import GpudcError
from gpudc.lab import rootfs
from gpudc.lab import state as st

DEBIAN_MIRROR = "http://deb.debian.org/debian/"


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start cmd detached from us (own session, reparented to init); returns its PID."""
    log.parent.mkdir(parents=True, exist_ok=True)
    shell = 'exec 3>&1 0</dev/null >>"$0" 2>&1; "$@" 3>&- & echo $! >&3'
    proc = subprocess.run(
        ["sh", "-c", shell, str(log), *cmd], capture_output=True, text=True, timeout=30,
        start_new_session=True, env=env,
    )
    if proc.returncode != 0 or not proc.stdout.strip().isdigit():
        raise GpudcError(f"lab: could not start {cmd[0]}: {proc.stderr.strip()}")
    return int(proc.stdout.strip())


def alive(pid: int | None, marker: str) -> bool:
    """Is pid alive and its command line containing marker (guards against PID reuse)?"""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return marker.encode() in cmdline


def terminate(pid: int | None, marker: str, timeout: float = 10.0) -> None:
    if not alive(pid, marker):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid, marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while alive(pid, marker) and time.monotonic() < deadline:
            time.sleep(0.05)


def stop_child(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 5.0) -> None:
    """End a process this one started (a Popen: its PID is ours to end): SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def wait_port(address: str, port: int, timeout: float = 15.0) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# --- apt-cacher-ng ----------------------------------------------------------------------------


def acng_cache_dir() -> Path:
    return rootfs.cache_dir() / "apt-cacher-ng"


def start_apt_cacher(bind: str, port: int) -> int:
    """apt-cacher-ng on the bridge with its own config dir; its cache survives `lab down`."""
    if not Path("/usr/sbin/apt-cacher-ng").exists():
        raise GpudcError("lab: apt-cacher-ng is not installed (apt-get install apt-cacher-ng)")
    conf = st.run_dir() / "apt-cacher-ng"
    conf.mkdir(parents=True, exist_ok=True)
    cache = acng_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    logdir = st.run_dir() / "logs" / "apt-cacher-ng"
    logdir.mkdir(parents=True, exist_ok=True)
    (conf / "backends_debian").write_text(DEBIAN_MIRROR + "\n")
    (conf / "acng.conf").write_text(
        "\n".join(
            [
                f"CacheDir: {cache}",
                f"LogDir: {logdir}",
                "SupportDir: /usr/lib/apt-cacher-ng",
                f"Port: {port}",
                f"BindAddress: {bind}",
                f"SocketPath: {st.run_dir() / 'apt-cacher-ng.socket'}",
                f"PidFile: {st.run_dir() / 'apt-cacher-ng.pid'}",
                "Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian",
                "ReportPage: acng-report.html",
                "ExThreshold: 4",
                "PassThroughPattern: ^$",
                "",
            ]
        )
    )
    pid = spawn(["/usr/sbin/apt-cacher-ng", "-c", str(conf), "ForeGround=1"], logdir / "stdout.log")
    if not wait_port(bind, port):
        terminate(pid, "apt-cacher-ng")
        raise GpudcError(f"lab: apt-cacher-ng did not listen on {bind}:{port} (see {logdir})")
    return pid


# --- stand-in NVIDIA repository ---------------------------------------------------------------


def nvidia_repo_dir() -> Path:
    return rootfs.cache_dir() / "nvidia-repo"


def refresh_repo(repo: Path | None = None) -> None:
    """Regenerate the flat repo's Packages(.gz) and Release from the .deb files in it."""
    repo = repo or nvidia_repo_dir()
    repo.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."], cwd=repo, capture_output=True, timeout=300,
    )
    if result.returncode != 0:
        raise GpudcError(f"lab: dpkg-scanpackages failed in {repo}: {result.stderr.decode().strip()}")
    packages = result.stdout
    (repo / "Packages").write_bytes(packages)
    (repo / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
    lines = [
        "Origin: gpudc-lab",
        "Label: gpudc-lab NVIDIA stand-ins",
        "Suite: lab",
        "Codename: lab",
        f"Date: {formatdate(usegmt=True)}",
        "Architectures: amd64 all",
    ]
    for algo, field in (("md5", "MD5Sum"), ("sha256", "SHA256")):
        lines.append(f"{field}:")
        for name in ("Packages", "Packages.gz"):
            data = (repo / name).read_bytes()
            lines.append(f" {hashlib.new(algo, data).hexdigest()} {len(data)} {name}")
    (repo / "Release").write_text("\n".join(lines) + "\n")


def start_repo_server(bind: str, port: int) -> int:
    repo = nvidia_repo_dir()
    refresh_repo(repo)
    pid = spawn(
        [sys.executable, "-m", "gpudc.lab.repo_server", "--bind", bind, "--directory", str(repo), str(port)],
        st.run_dir() / "logs" / "nvidia-repo.log",
    )
    if not wait_port(bind, port):
        terminate(pid, "repo_server")
        raise GpudcError(f"lab: the NVIDIA stand-in repo did not listen on {bind}:{port}")
    return pid


def start_seed_server(stack: str, render_dir: Path, bind: str, port: int = 80, site_ca: bool = False) -> int:
    """`gpudc boot serve` over the lab's rendered tree at the boot server address: each reimaged
    host's cloud-init fetches its own seed there (others' are refused). `site_ca`: HTTPS with a
    certificate from the site's boot CA."""
    name = "seed-server-https" if site_ca else "seed-server"
    pid = spawn(
        [sys.executable, "-m", "gpudc.cli", "boot", "serve", "--stack", stack, "--dir", str(render_dir),
         "--host", bind, "--port", str(port), *(["--site-ca"] if site_ca else [])],
        st.run_dir() / "logs" / f"{name}.log",
    )
    if not wait_port(bind, port):
        terminate(pid, str(st.run_dir()))
        raise GpudcError(f"lab: the seed server did not listen on {bind}:{port} (see {st.run_dir()}/logs/{name}.log)")
    return pid


# --- BMCs ----------------------------------------------------------------------------------


def start_bmc_server() -> int:
    """The Redfish service for every lab host (gpudc.lab.bmc), one listener per BMC address."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return spawn([sys.executable, "-m", "gpudc.lab.bmc", str(st.run_dir())], st.run_dir() / "logs" / "bmc.log",
                 env=env)
