#!/usr/bin/env python3
"""Benchmark: `gpudc validate` fan-out over 1,000 nodes on loopback, against OpenSSH with
`xargs -P` and against `ansible -m command` (forks 50), all running the same quick probe.

Setup (as root): the script re-runs itself inside a fresh network namespace (`unshare --net`)
that has only `lo`. One sshd there listens on 0.0.0.0:22 and answers as 1,000 nodes: node i is
the address dialled, 127.0.1.1 ... 127.0.4.255. One host key serves every node; known_hosts has
one line per node name, and every client checks it strictly (paramiko by node name, OpenSSH and
Ansible through HostKeyAlias). Nothing leaves the namespace; it disappears with the script.
The namespace also has its own mounts, where root's ~/.bashrc is hidden: bash runs it for every
SSH command, and on a development machine it may start pyenv (not what a node does).

Each tool runs `python3 - --level quick ...` with the probe script on stdin on every node and
must get the probe's output back from each (counted, so the work compared is the same):
  gpudc    gpudc.validate.run.validate: paramiko pool (64), probe, parse, checks, verdicts
  openssh  xargs -P 64 ssh ... < probe, tuned to what gpudc negotiates (curve25519-sha256 kex,
           aes128-gcm): the peer of record; once more with OpenSSH's defaults (sntrup761x25519
           kex), for information
  ansible  ansible all -m command -a '{"cmd": ..., "stdin": probe}' --forks 50 (defaults)

A runs gpudc and tuned OpenSSH side by side, --rounds times (default 3), the order alternating
per round, and prints the median ratio. CPU is each side's own: the controller's from
getrusage(RUSAGE_SELF) (every thread), OpenSSH's from getrusage(RUSAGE_CHILDREN) of xargs and its
sh/ssh processes, and the node side's from what the sshd listener reaped (its /proc cutime+cstime).
All of it shares these 2 cores, so the wall ratio is bounded by the node-side sshd work (~18 ms a
connection, the same for every client); the controller CPU per node is the figure a real site,
whose nodes do that work themselves, sees.

    sudo .venv/bin/python bench/validate_fanout.py [--nodes 1000] [--rounds 3] [--skip-ansible]
                                                   [--skip-default-kex]

Target: gpudc <= 30 s for 1,000 nodes, >= 1.3x tuned OpenSSH fan-out with <= 5 ms controller
CPU per node, >= 5x Ansible. Prints the ratios.

Measured 2026-12-01 on the 2-core development machine (shared: others' test runs, load average
2-80 during the runs), 1,000 nodes, 5 rounds:
  A. one node at a time: gpudc 33-40 ms/node, tuned OpenSSH 138-150 ms/node
     side by side: gpudc 12.4-12.6 s (median), 2.9-3.0 ms controller CPU/node; tuned OpenSSH
     11.3 ms/node of client CPU; median ratio 1.61x (rounds 1.42-1.97x) in one run, 2.46x
     (2.33-2.89x) in another; OpenSSH with its default kex 138.0 s (11.1x)
     Before (same script, the fan-out as of 2026-11-28): gpudc 12.1 s, 4.4 ms/node, 1.19x
  B. real probe on every node: gpudc 54-61 s; ansible -m command --forks 50: 299.7 s (4.94x; an
     earlier run 320.2 s, 5.69x)
In B the probe's own CPU on the 1,000 "nodes" (~0.1 s each, all on these 2 cores) bounds the time;
on a real site that work runs on the nodes, which is what A models.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gpudc.plan import load_plan  # noqa: E402
from gpudc.plan.types import Plan  # noqa: E402
from gpudc.validate.fanout import SshOptions  # noqa: E402
from gpudc.validate.probe import MARKER, probe_command, probe_source  # noqa: E402
from gpudc.validate.run import validate  # noqa: E402

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
PROBE_ARGS = ("quick", 5.0, ["libnccl2", "datacenter-gpu-manager-4-core"])
#: OpenSSH tuned to the algorithms gpudc negotiates with this sshd (its defaults pick sntrup761x25519
#: kex, several times the CPU, and chacha20-poly1305).
TUNED = ["-o", "KexAlgorithms=curve25519-sha256", "-o", "Ciphers=aes128-gcm@openssh.com"]
TUNED_NAME = "curve25519 kex, aes128-gcm"
LABEL = 40


def addresses(n: int) -> list[str]:
    if n > 4 * 255:
        raise SystemExit("at most 1020 nodes (127.0.1.1 - 127.0.4.255)")
    return [f"127.0.{1 + i // 255}.{1 + i % 255}" for i in range(n)]


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return Path(f"{path}.pub").read_text().strip()


def keys(tmp: Path) -> tuple[str, Path]:
    host_pub = keygen(tmp / "host_key")
    client_pub = keygen(tmp / "client_key")
    (tmp / "authorized_keys").write_text(client_pub + "\n")
    return host_pub, tmp / "client_key"


def start_sshd(tmp: Path, port: int, force_command: str | None) -> subprocess.Popen[bytes]:
    config = tmp / f"sshd_config_{port}"
    force = f"ForceCommand {force_command}\n" if force_command else ""
    config.write_text(
        f"""ListenAddress 0.0.0.0:{port}
HostKey {tmp}/host_key
PidFile {tmp}/sshd_{port}.pid
AuthorizedKeysFile {tmp}/authorized_keys
StrictModes no
UsePAM no
UseDNS no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
MaxStartups 2000:100:4000
MaxSessions 100
LogLevel QUIET
{force}"""
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)])
    time.sleep(0.5)
    if proc.poll() is not None:
        raise SystemExit("sshd did not start")
    return proc


def bench_plan(n: int) -> Plan:
    """The lab stack's plan with its nodes cloned to `n` (names node0001..., loopback addresses)."""
    base = load_plan("lab")
    template = base.nodes[0]
    nodes = [
        dataclasses.replace(template, name=f"node{i + 1:04d}", addresses={"inband": addr}, index=i)
        for i, addr in enumerate(addresses(n))
    ]
    return dataclasses.replace(base, nodes=nodes)


def cpu_self() -> float:
    """CPU seconds (user + system) of this process, every thread: the gpudc controller."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_children() -> float:
    """CPU seconds of this process's waited-for children (xargs and its sh/ssh processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_reaped_by(pid: int) -> float:
    """CPU seconds of the children `pid` has reaped: sshd's per-connection processes, the node side."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime + cstime


@dataclasses.dataclass
class Run:
    seconds: float
    probed: int
    client_cpu: float  # seconds: the controller (gpudc) or xargs + sh + ssh (OpenSSH)
    node_cpu: float  # seconds: what sshd's per-connection processes used


def run_gpudc(plan: Plan, key: Path, known: Path, parallel: int, port: int) -> tuple[float, int, float]:
    """(seconds, nodes probed, controller CPU seconds) of validate(): fan-out, parse, checks, verdicts."""
    ssh = SshOptions(identity=key, known_hosts=known, parallel=parallel, port=port, connect_timeout=30,
                     auth_timeout=30)
    cpu = cpu_self()
    start = time.perf_counter()
    run = validate(plan, ssh=ssh, record_history=False, progress=False, command_timeout=300)
    elapsed = time.perf_counter() - start
    assert len(run.verdicts) == len(plan.nodes)
    return elapsed, len(run.facts), cpu_self() - cpu


def run_openssh(
    tmp: Path, key: Path, known: Path, n: int, parallel: int, port: int, extra: list[str]
) -> tuple[float, int]:
    out = Path(tempfile.mkdtemp(prefix="openssh-out-", dir=tmp))
    probe = tmp / "probe.py"
    lines = tmp / "hosts.txt"
    lines.write_text("".join(f"node{i + 1:04d} {a}\n" for i, a in enumerate(addresses(n))))
    ssh = ["ssh", "-i", str(key), "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30",
           "-o", "ControlMaster=no", "-o", "LogLevel=ERROR", "-p", str(port), *extra]
    script = f'{" ".join(ssh)} -o HostKeyAlias="$0" root@"$1" "$2" < {probe} > {out}/"$0" 2>&1'
    start = time.perf_counter()
    with open(lines) as hosts:
        subprocess.run(
            ["xargs", "-P", str(parallel), "-L", "1", "sh", "-c", script.replace('"$2"', _q(probe_command(*PROBE_ARGS)))],
            stdin=hosts, check=False,
        )
    elapsed = time.perf_counter() - start
    ok = sum(1 for f in out.iterdir() if MARKER in f.read_text(errors="replace"))
    return elapsed, ok


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def run_ansible(tmp: Path, key: Path, known: Path, n: int, forks: int) -> tuple[float, int]:
    inventory = tmp / "inventory.ini"
    inventory.write_text(
        "[nodes]\n"
        + "".join(
            f"node{i + 1:04d} ansible_host={a} ansible_ssh_extra_args='-o HostKeyAlias=node{i + 1:04d}'\n"
            for i, a in enumerate(addresses(n))
        )
        + "[nodes:vars]\nansible_user=root\nansible_python_interpreter=/usr/bin/python3\n"
        f"ansible_ssh_private_key_file={key}\n"
        f"ansible_ssh_common_args='-o UserKnownHostsFile={known} -o GlobalKnownHostsFile=/dev/null'\n"
    )
    args = json.dumps({"cmd": probe_command(*PROBE_ARGS), "stdin": probe_source()})
    env = dict(os.environ, ANSIBLE_HOME=str(tmp / "ansible-home"), ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"),
               ANSIBLE_SSH_CONTROL_PATH_DIR=str(tmp / "cp"), ANSIBLE_DEPRECATION_WARNINGS="0",
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    ansible = str(Path(sys.executable).parent / "ansible")
    out = tmp / "ansible-out.txt"
    start = time.perf_counter()
    with open(out, "w") as handle:
        subprocess.run([ansible, "nodes", "-i", str(inventory), "-f", str(forks), "-o", "-m", "command", "-a", args],
                       env=env, stdout=handle, stderr=subprocess.STDOUT, check=False)
    elapsed = time.perf_counter() - start
    lines = out.read_text(errors="replace").splitlines()
    ok = sum(1 for line in lines if MARKER in line and "| CHANGED |" in line)
    if ok == 0:
        sys.stderr.write("\n".join(lines[:5])[:3000] + "\n")
    return elapsed, ok


def clean_login_shell(tmp: Path) -> None:
    """Nodes have a plain root shell: hide this machine's ~/.bashrc (pyenv init, run by bash for every
    SSH command) behind an empty file, in this private mount namespace only."""
    bashrc = Path.home() / ".bashrc"
    if bashrc.exists():
        empty = tmp / "empty-bashrc"
        empty.write_text("")
        subprocess.run(["mount", "--bind", str(empty), str(bashrc)], check=True)


def measured(sshd_pid: int, n: int, gpudc: Callable[[], tuple[float, int, float]] | None = None,
             openssh: Callable[[], tuple[float, int]] | None = None) -> Run:
    """One run of one tool, with its client CPU and the node-side (sshd) CPU it caused."""
    node0, children0 = cpu_reaped_by(sshd_pid), cpu_children()
    if gpudc is not None:
        seconds, probed, client = gpudc()
    else:
        assert openssh is not None
        seconds, probed = openssh()
        client = cpu_children() - children0
    if probed != n:
        print(f"  !! only {probed}/{n} nodes answered: this run does not count as the same work", flush=True)
    return Run(seconds, probed, client, cpu_reaped_by(sshd_pid) - node0)


def describe(label: str, run: Run, n: int) -> str:
    return (f"{label} {run.seconds:6.1f} s  {run.probed}/{n} probed  client CPU {1000 * run.client_cpu / n:5.1f} ms/node"
            f"  (sshd {1000 * run.node_cpu / n:4.1f} ms/node)")


def inside(args: argparse.Namespace) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert links.count("\n") == 1 and ": lo:" in links, "expected a namespace with only lo"
    tmp = Path(tempfile.mkdtemp(prefix="gpudc-bench-"))
    (tmp / "probe.py").write_text(probe_source())
    clean_login_shell(tmp)
    host_pub, key = keys(tmp)
    # what the probe prints on this machine, for the nodes that replay it
    cmd = probe_command(*PROBE_ARGS)
    canned = subprocess.run(["sh", "-c", cmd], input=probe_source(), capture_output=True, text=True, check=True)
    (tmp / "canned.txt").write_text(canned.stdout)
    real = start_sshd(tmp, 22, None)
    replay = start_sshd(tmp, 2222, f"sh -c 'cat >/dev/null; cat {tmp}/canned.txt'")
    n, p = args.nodes, args.parallel
    try:
        key_type, key_b64 = host_pub.split()[:2]
        known = tmp / "known_hosts"
        known.write_text("".join(f"node{i + 1:04d} {key_type} {key_b64}\n" for i in range(n)))
        plan = bench_plan(n)
        print(f"{n} nodes on loopback: one sshd answers as every node (the address dialled picks it)", flush=True)
        print(f"OpenSSH tuned: {' '.join(TUNED)}", flush=True)
        print("\nA. fan-out: each node reads the probe from stdin and answers with a recorded probe output;"
              f"\n   gpudc and tuned OpenSSH side by side in {args.rounds} round(s), the order alternating", flush=True)

        def gpudc() -> Run:
            return measured(replay.pid, n, gpudc=lambda: run_gpudc(plan, key, known, p, 2222))

        def openssh(extra: list[str]) -> Run:
            return measured(replay.pid, n, openssh=lambda: run_openssh(tmp, key, known, n, p, 2222, extra))

        m = min(n, args.latency_nodes)
        print(f"\n   one node at a time first ({m} nodes, pool 1, -P 1): the time a node takes, unloaded", flush=True)
        g_seq = run_gpudc(bench_plan(m), key, known, 1, 2222)[0]
        o_seq = run_openssh(tmp, key, known, m, 1, 2222, TUNED)[0]
        print(f"{'  gpudc validate (pool 1):'.ljust(LABEL)} {1000 * g_seq / m:6.0f} ms/node", flush=True)
        print(f"{'  OpenSSH ssh (tuned), one by one:'.ljust(LABEL)} {1000 * o_seq / m:6.0f} ms/node", flush=True)
        g_label = f"  gpudc validate (paramiko, pool {p}):".ljust(LABEL)
        o_label = f"  OpenSSH xargs -P {p} (tuned):".ljust(LABEL)
        ratios: list[float] = []
        g_runs: list[Run] = []
        o_runs: list[Run] = []
        for r in range(args.rounds):
            print(f" round {r + 1}", flush=True)
            order = ("gpudc", "openssh") if r % 2 == 0 else ("openssh", "gpudc")
            got: dict[str, Run] = {}
            for tool in order:
                got[tool] = gpudc() if tool == "gpudc" else openssh(TUNED)
                print(describe(g_label if tool == "gpudc" else o_label, got[tool], n), flush=True)
            g_runs.append(got["gpudc"])
            o_runs.append(got["openssh"])
            ratios.append(got["openssh"].seconds / got["gpudc"].seconds)
            print(f"  ratio {ratios[-1]:.2f}x", flush=True)
        o_default: Run | None = None
        if not args.skip_default_kex:
            o_default = openssh([])
            print(describe(f"  OpenSSH xargs -P {p} (defaults, once):".ljust(LABEL), o_default, n), flush=True)
        print("\nB. the real quick probe runs on every node (this machine: its CPU is shared by client and nodes)",
              flush=True)
        gr, ok, _ = run_gpudc(plan, key, known, p, 22)
        print(f"{g_label} {gr:6.1f} s  {ok}/{n} probed", flush=True)
        a = None
        if not args.skip_ansible:
            a, ok = run_ansible(tmp, key, known, n, args.forks)
            print(f"{f'  ansible -m command --forks {args.forks}:'.ljust(LABEL)} {a:6.1f} s  {ok}/{n} probed", flush=True)
            stop_namespace_leftovers_except({real.pid, replay.pid})
        g_median = statistics.median(run.seconds for run in g_runs)
        g_cpu = statistics.median(run.client_cpu for run in g_runs) * 1000 / n
        o_cpu = statistics.median(run.client_cpu for run in o_runs) * 1000 / n
        print()
        print(f"gpudc fan-out: {g_median:.1f} s for {n} nodes, median of {args.rounds} (target <= {30 * n / 1000:.0f} s)")
        print(f"gpudc controller CPU: {g_cpu:.1f} ms/node, median (target <= 5 ms); "
              f"tuned OpenSSH ssh+sh+xargs: {o_cpu:.1f} ms/node ({o_cpu / g_cpu:.1f}x gpudc's)")
        print(f"one node at a time: gpudc {1000 * g_seq / m:.0f} ms/node, tuned OpenSSH {1000 * o_seq / m:.0f} ms/node "
              f"({o_seq / g_seq:.2f}x)")
        print(f"ratio vs OpenSSH xargs (tuned: {TUNED_NAME}): median {statistics.median(ratios):.2f}x "
              f"of {', '.join(f'{x:.2f}x' for x in ratios)} (target >= 1.3x)")
        if o_default is not None:
            print(f"ratio vs OpenSSH xargs (defaults, information): {o_default.seconds / g_median:.2f}x")
        if a:
            print(f"with the real probe: {gr:.1f} s; ratio vs Ansible {a / gr:.2f}x (target >= 5x)")
    finally:
        for proc in (real, replay):
            proc.terminate()
            proc.wait(timeout=10)
        subprocess.run(["umount", str(Path.home() / ".bashrc")], check=False, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def stop_namespace_leftovers_except(keep: set[int]) -> None:
    """End the ssh processes this run left in its private namespace (Ansible's ControlPersist masters)."""
    mine = os.readlink("/proc/self/ns/net")
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid() or int(entry) in keep:
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/net") == mine and Path(f"/proc/{entry}/cmdline").read_bytes().startswith(b"ssh"):
                os.kill(int(entry), 15)
        except OSError:
            continue


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=64)
    parser.add_argument("--forks", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="side-by-side rounds of gpudc and tuned OpenSSH")
    parser.add_argument("--latency-nodes", type=int, default=40, help="nodes probed one at a time first")
    parser.add_argument("--skip-ansible", action="store_true")
    parser.add_argument("--skip-default-kex", action="store_true",
                        help="leave out the (slow, information only) OpenSSH run with its default kex")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        return inside(args)
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark makes a private network namespace (unshare --net)")
    cmd = ["unshare", "--net", "--mount", "--", sys.executable, __file__, "--inside", *sys.argv[1:]]
    return subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
