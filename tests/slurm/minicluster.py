"""A one-node Slurm cluster of the real Debian daemons (munged, slurmctld, slurmd 22.05) in a
network namespace of its own (loopback only), for tests that need a real controller but not the
lab: no port or socket is shared with the machine or another test run.

    with MiniCluster(tmp_path, nodes=["gb200-01"]) as mini:
        mini.run("sinfo")                       # a client command against it
        SlurmDrainer(client=mini.client)        # gpudc's drainer reaches it the same way

Every daemon is started by us, by PID, and ended by that PID.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

CONF = """\
ClusterName=mini
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge/munge.socket.2
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=1
JobRequeue=1
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 CPUs=2 Gres=gpu:gb200:4 State=UNKNOWN
PartitionName=nvl72 Nodes={node} Default=YES State=UP MaxTime=INFINITE
"""
# slurmd stats a GPU's device file before it counts it: stand-in files in the cluster's folder
GRES = "AutoDetect=off\nNodeName={node} Name=gpu Type=gb200 File={dir}/dev/nvidia[0-3]\n"


class MiniCluster:
    def __init__(self, root: Path, node: str = "gb200-01") -> None:
        self.root = root
        self.node = node
        self.pids: list[int] = []
        self.holder: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def client(self) -> list[str]:
        """The command prefix that runs a Slurm client against this cluster."""
        assert self.holder is not None
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "env", f"SLURM_CONF={self.conf}"]

    def run(self, *args: str, timeout: float = 20) -> str:
        result = subprocess.run([*self.client, *args], capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{' '.join(args)}: {result.stderr.strip()}"
        return result.stdout

    def _daemon(self, *argv: str) -> None:
        assert self.holder is not None
        log = open(self.root / f"{Path(argv[0]).name}.out", "wb")  # noqa: SIM115 - the daemon's
        proc = subprocess.Popen(["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", *argv],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "SLURM_CONF": str(self.conf)}, start_new_session=True)
        self.pids.append(proc.pid)

    def __enter__(self) -> MiniCluster:
        root = self.root
        for sub in ("munge", "state", "spool"):
            (root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        root.chmod(0o755)
        key = root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        self.conf.write_text(CONF.format(dir=root, node=self.node))
        (root / "gres.conf").write_text(GRES.format(node=self.node, dir=root))
        (root / "dev").mkdir(exist_ok=True)
        for i in range(4):
            (root / "dev" / f"nvidia{i}").touch()
        # getaddrinfo(AI_ADDRCONFIG), which slurmctld binds with, wants one non-loopback address: a
        # veth pair (both ends inside) with a TEST-NET-1 address, in a namespace that has no way out
        setup = "ip link set lo up && ip link add d0 type veth peer name d1 && ip addr add 192.0.2.1/32 dev d0 && " \
                "ip link set d0 up && ip link set d1 up && exec sleep 3600"
        self.holder = subprocess.Popen(["unshare", "--net", "sh", "-c", setup], start_new_session=True)
        try:
            deadline = time.monotonic() + 10
            while "d0" not in self._links() and time.monotonic() < deadline:
                time.sleep(0.05)
            self._daemon("munged", "--foreground", "--force", f"--key-file={key}",
                         f"--socket={root}/munge/munge.socket.2", f"--pid-file={root}/munge/munged.pid",
                         f"--log-file={root}/munge/munged.log", f"--seed-file={root}/munge/munge.seed")
            self._wait(lambda: (root / "munge" / "munge.socket.2").exists(), "munged")
            self._daemon("slurmctld", "-D", "-i", "-f", str(self.conf))
            self._wait(lambda: self._ok("scontrol", "ping"), "slurmctld")
            self._daemon("slurmd", "-D", "-N", self.node, "-f", str(self.conf))
            self._wait(lambda: "idle" in self._out("sinfo", "--noheader", "--format=%T"), "slurmd idle")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def restart_slurmd(self) -> None:
        """Stop our slurmd (by its PID) and start it again: it registers the node afresh (gres.conf re-read)."""
        assert len(self.pids) == 3, "the cluster is not up"
        pid = self.pids.pop()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not os.waitpid(pid, os.WNOHANG)[0]:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.05)
        self._daemon("slurmd", "-D", "-N", self.node, "-f", str(self.conf))

    def _links(self) -> str:
        assert self.holder is not None
        return subprocess.run(["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "ip", "-o", "link"],
                              capture_output=True, text=True, timeout=10).stdout

    def _ok(self, *args: str) -> bool:
        return subprocess.run([*self.client, *args], capture_output=True, timeout=10).returncode == 0

    def _out(self, *args: str) -> str:
        return subprocess.run([*self.client, *args], capture_output=True, text=True, timeout=10).stdout

    def _wait(self, predicate: object, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            if time.monotonic() > deadline:
                logs = " | ".join(p.read_text(errors="replace")[-400:] for p in self.root.glob("*.log"))
                raise AssertionError(f"mini cluster: {what} not ready within {timeout:g}s: {logs}")
            time.sleep(0.1)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if len(self.pids) == 3:  # no job step may outlive the cluster
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run([*self.client, "scancel", "--user=root"], capture_output=True, timeout=10)
                deadline = time.monotonic() + 10
                while self._out("squeue", "--noheader").strip() and time.monotonic() < deadline:
                    time.sleep(0.2)
        for pid in reversed(self.pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in reversed(self.pids):
            with contextlib.suppress(ChildProcessError):
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                    if done:
                        break
                    time.sleep(0.05)
                else:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
        self.pids.clear()
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait(timeout=10)
