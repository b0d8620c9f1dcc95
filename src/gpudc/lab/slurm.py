"""The lab's Slurm controller: slurmctld and munged in a container of their own.

When the lab's stack has a `gpudc:slurm` section, `lab up` makes one more systemd-nspawn
container from the same root filesystem (which carries Debian 12's Slurm 22.05 and munge), in
its own network namespace on the lab bridge at `slurm.controller_address`, named
`slurm.controller`. Its /etc/slurm holds the files `gpudc render` writes for the site (the same
files the `slurm` role installs on every node) and its munge key is the site's (secret dir,
mode 0600). The nodes get slurmd and munge from the `slurm` role at provision time.

gpudc and the tests reach the controller through `<run dir>/slurm/client CMD...`, which runs a
Slurm client (scontrol, sinfo, squeue, sbatch...) inside the controller's namespaces; the lab
stack names it as `gpudc:slurm.client`. `lab down` stops the container with the hosts; its
namespace, veth and overlay go with the rest of the lab.
"""

from __future__ import annotations

import ipaddress
import os
import secrets as pysecrets
import subprocess
from pathlib import Path
from typing import Any

from gpudc.errors import GpudcError, InputError
from gpudc.lab import hosts, net, services
from gpudc.lab import state as st
from gpudc.model.site import SlurmSpec
from gpudc.plan.types import Node, Plan
from gpudc.project import site_secret_dir
from gpudc.secrets import secret_file

#: veth index of the controller (lab hosts use 0..199).
CONTROLLER_INDEX = 250
SLURMCTLD_PORT = 6817
MUNGE_KEY_FILE = "munge.key"
#: Files of `gpudc render`'s slurm/ folder that slurmctld and slurmd read.
CONFIG_FILES = ("slurm.conf", "nodes.conf", "gres.conf", "topology.conf")
READY_TIMEOUT_S = 60.0

CLIENT = """\
#!/bin/sh
# gpudc lab: run a Slurm client command (scontrol, sinfo, squeue, sbatch...) inside the lab's
# slurmctld container, where its slurm.conf and munge socket are. Usage: client scontrol ping
nspawn=$(cat "{pidfile}" 2>/dev/null) || {{ echo "gpudc lab: slurmctld is not running" >&2; exit 3; }}
init=$(cut -d' ' -f1 "/proc/$nspawn/task/$nspawn/children" 2>/dev/null)
[ -n "$init" ] || {{ echo "gpudc lab: slurmctld container is not running" >&2; exit 3; }}
exec nsenter --target="$init" --mount --uts --ipc --net -- "$@"
"""


def slurm_dir() -> Path:
    return st.run_dir() / "slurm"


def config_dir() -> Path:
    """The rendered Slurm files (the lab's `slurm_config_dir` for the slurm role)."""
    return slurm_dir() / "render" / "slurm"


def client_path() -> Path:
    return slurm_dir() / "client"


def munge_key(site: str) -> Path:
    """The site's munge key (1024 random bytes, mode 0600 in the secret dir), made on first use."""
    return secret_file(site_secret_dir(site) / MUNGE_KEY_FILE, lambda: pysecrets.token_bytes(1024))


def site_slurm(stack: str) -> SlurmSpec | None:
    """The stack's enabled `gpudc:slurm` settings, or None."""
    from gpudc.model import load_site

    site, _ = load_site(stack)
    return site.slurm if site.slurm is not None and site.slurm.enabled else None


def render_config(plan: Plan, stack: str) -> Path:
    """Render the site's Slurm files (gpudc.render's own renderer) into the run dir."""
    from gpudc.model import load_site
    from gpudc.render.artifacts import Ctx, render_slurm
    from gpudc.render.context import extras_from_site
    from gpudc.render.writer import Writer

    site, _ = load_site(stack)
    writer = Writer(slurm_dir() / "render")
    render_slurm(Ctx.build(plan, extras_from_site(plan, site)), writer)
    writer.finish()
    if not (config_dir() / "slurm.conf").is_file():
        raise GpudcError("lab: rendering the site's Slurm files gave no slurm.conf")
    return config_dir()


def _ids(name: str, db: str) -> int:
    """uid/gid of `name` in the lab root filesystem (Debian's packages made the user)."""
    for line in (hosts.base_dir() / "etc" / db).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise GpudcError(f"lab: the root filesystem has no {name} in /etc/{db}; rebuild it (rootfs recipe)")


def _controller_record(lab: dict[str, Any], spec: SlurmSpec) -> dict[str, Any]:
    if spec.controller_address is None:
        raise InputError("lab: gpudc:slurm.controller_address must be set: the address of the lab's slurmctld "
                         "(an address of the inband reserve)")
    address = str(spec.controller_address)
    bridge = ipaddress.IPv4Interface(f"{lab['bridge_address']}/{lab['bridge_prefixlen']}")
    if spec.controller_address not in bridge.network or address == lab["bridge_address"]:
        raise InputError(f"lab: gpudc:slurm.controller_address {address} must be in {bridge.network} "
                         f"and not the bridge's {lab['bridge_address']}")
    taken = {h["address"]: h["name"] for h in lab["hosts"]}
    if address in taken:
        raise InputError(f"lab: gpudc:slurm.controller_address {address} is node {taken[address]}'s address")
    if spec.controller in {h["name"] for h in lab["hosts"]}:
        raise InputError(f"lab: gpudc:slurm.controller {spec.controller!r} is also a node's name")
    return {"name": spec.controller, "index": CONTROLLER_INDEX, "address": address, "pid": None,
            "prefixlen": lab["bridge_prefixlen"]}


def _customize(lab: dict[str, Any], rec: dict[str, Any], conf: Path) -> None:
    """The controller's overlay: identity, names, /etc/slurm, the munge key, enabled daemons."""
    root = hosts.root_dir(rec["name"])
    name = rec["name"]
    lines = ["127.0.0.1 localhost", f"{rec['address']} {name}"]
    lines += [f"{h['address']} {h['name']}" for h in lab["hosts"]]
    hosts.write_into(root, "etc/hostname", name + "\n", 0o644, (0, 0))
    hosts.write_into(root, "etc/hosts", "\n".join(lines) + "\n", 0o644, (0, 0))
    hosts.write_into(root, "etc/machine-id", hosts.machine_id(lab["site"], name) + "\n", 0o444, (0, 0))
    for conf_file in CONFIG_FILES:
        if (conf / conf_file).is_file():
            hosts.write_into(root, f"etc/slurm/{conf_file}", (conf / conf_file).read_text(), 0o644, (0, 0))
    munge_uid, munge_gid = _ids("munge", "passwd"), _ids("munge", "group")
    hosts.write_into(root, "etc/munge/munge.key", munge_key(lab["site"]).read_bytes(), 0o400, (munge_uid, munge_gid))
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ("munge.service", "slurmctld.service"):
        link = wants / unit
        if not link.is_symlink():
            link.symlink_to(f"/lib/systemd/system/{unit}")
    # the controller takes no SSH logins (it has no host key); its clients run through `client`
    masked = root / "etc/systemd/system/ssh.service"
    if not masked.is_symlink():
        masked.symlink_to("/dev/null")
    log = root / "var/log/slurm"
    log.mkdir(parents=True, exist_ok=True)
    os.chown(log, _ids("slurm", "passwd"), _ids("slurm", "group"))


def customize_host(rec: dict[str, Any], node: Node | None) -> None:
    """A lab host's simulated GPU device files: slurmd stats gres.conf's File=/dev/nvidiaN before it
    counts a GPU. nspawn gives each boot a fresh /dev, so systemd-tmpfiles makes them at boot
    (empty files: nothing opens them; the simulated NVML answers the queries)."""
    if node is None or not node.expected.gpu_count:
        return
    lines = ["# gpudc lab: the simulated GPUs' device files (gpudc.lab.slurm)"]
    lines += [f"f /dev/nvidia{i} 0666 root root -" for i in range(node.expected.gpu_count)]
    hosts.write_into(hosts.root_dir(rec["name"]), "etc/tmpfiles.d/gpudc-lab-nvidia.conf", "\n".join(lines) + "\n", 0o644, (0, 0))


def start(lab: dict[str, Any], plan: Plan) -> dict[str, Any] | None:
    """Make and boot the controller container when the lab's stack runs Slurm; None when it does not.

    Records it as lab["slurm"] (the caller saves the state) and writes the client wrapper."""
    if not plan.site.has_slurm:
        return None
    spec = site_slurm(lab["stack"])
    if spec is None:
        return None
    rec = _controller_record(lab, spec)
    conf = render_config(plan, lab["stack"])
    net.create_hosts([(rec["name"], rec["index"], f"{rec['address']}/{rec['prefixlen']}")])
    rec["netns"] = net.netns_name(rec["name"])
    rec["veth"] = net.veth_name(rec["index"])
    hosts.mount_overlay(rec["name"])
    _customize(lab, rec, conf)
    lab["slurm"] = rec
    hosts.start(rec)
    pidfile = slurm_dir() / "slurmctld-nspawn.pid"
    pidfile.write_text(f"{rec['pid']}\n")
    client = client_path()
    client.write_text(CLIENT.format(pidfile=pidfile))
    client.chmod(0o755)
    rec["client"] = str(client)
    rec["config_dir"] = str(conf)
    return rec


def wait_ready(lab: dict[str, Any], timeout: float = READY_TIMEOUT_S) -> None:
    """Wait until slurmctld answers on its port; GpudcError with its log's tail otherwise."""
    rec = lab.get("slurm")
    if not rec:
        return
    if services.wait_port(rec["address"], SLURMCTLD_PORT, timeout=timeout):
        return
    log = hosts.root_dir(rec["name"]) / "var/log/slurm/slurmctld.log"
    tail = log.read_text(errors="replace")[-600:] if log.exists() else "(no slurmctld log)"
    raise GpudcError(f"lab: slurmctld did not listen on {rec['address']}:{SLURMCTLD_PORT} "
                     f"within {timeout:g}s: {tail.strip()}")


def stop(lab: dict[str, Any]) -> None:
    """Stop the controller container (its namespace, veth and overlay go with the lab's)."""
    rec = lab.get("slurm")
    if rec:
        hosts.stop(rec, force=True, timeout=10)


def status(lab: dict[str, Any]) -> dict[str, Any] | None:
    rec = lab.get("slurm")
    if not rec:
        return None
    return {
        "controller": rec["name"],
        "address": rec["address"],
        "state": "running" if hosts.running(rec) else "off",
        "client": rec["client"],
        "config_dir": rec["config_dir"],
        "munge_key_file": str(munge_key(lab["site"])),
    }


def client(*command: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client command on the lab's controller (tests and scripts)."""
    lab = st.load()
    if lab is None or not lab.get("slurm"):
        raise GpudcError("lab: no Slurm controller (is the lab up with a stack that has gpudc:slurm?)")
    return subprocess.run([lab["slurm"]["client"], *command], capture_output=True, text=True, timeout=timeout)
