"""The lab's library API: `up`, `down`, `status`, `inject`, `clear`, `refresh_repo`.

Others (the CLI, the `lab` pytest fixture, provisioning/validator/reprovision tests) call these.
`status()` returns the document `gpudc lab status --json` prints.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import ipaddress
import json
import os
import secrets as pysecrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from gpudc import secrets
from gpudc.errors import GpudcError, InputError
from gpudc.lab import boot_network, hosts, net, rootfs, services
from gpudc.lab import slurm as lab_slurm
from gpudc.lab import state as st
from gpudc.plan.types import Node, Plan
from gpudc.project import current_project
from gpudc.resources import shipped

BMC_PORT = 8000
BMC_USERNAME = "admin"
SHIM_DIR = Path(__file__).resolve().parent / "shims"
NVML_DIR = Path(__file__).resolve().parent / "nvml"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def _require_root() -> None:
    if os.geteuid() != 0:
        raise GpudcError("lab: needs root (network namespaces, mounts, systemd-nspawn)")


def ensure_blackhole() -> None:
    """The root-namespace blackhole route for 10.213.0.0/16 (idempotent; tests and `make test` call it)."""
    _require_root()
    net.ensure_blackhole()


# --- plan -----------------------------------------------------------------------------------


def _stack_file(stack: str) -> Path:
    """A stack file path, the current project's stack of that name, or else gpudc's shipped example."""
    path = Path(stack)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    project = current_project()
    if project is not None and project.stack_file(stack).is_file():
        return project.stack_file(stack)
    example = shipped("examples") / f"Pulumi.{stack}.yaml"
    if example.is_file():
        return example
    where = f"project {project.root}" if project else "this folder (no gpudc project)"
    raise InputError(f"lab: no stack {stack!r} in {where} and no shipped example of that name")


#: Python distributions the lab needs beyond gpudc's base: the `lab` extra (pyproject.toml).
LAB_DISTRIBUTIONS = ("sushy-tools", "nvidia-nvml-dev")


def missing_lab_dependencies() -> list[str]:
    """The `lab` extra's distributions that are not installed."""
    import importlib.metadata

    missing = []
    for dist in LAB_DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    return missing


def require_lab_dependencies() -> None:
    missing = missing_lab_dependencies()
    if missing:
        raise InputError(
            f"lab: {', '.join(missing)} not installed; the lab needs gpudc's `lab` extra: "
            "pip install 'gpudc[lab]' (or pipx install 'gpudc[lab]')"
        )


def lab_plan(stack: str, nodes: int | None) -> tuple[str, Plan]:
    """(stack to record, plan) for a lab of `nodes` hosts.

    None: every node of the stack. Fewer than the stack has: its first N. More: a derived stack
    (written into the run dir) whose first counted pool is enlarged, so every host has a real plan.
    """
    from gpudc.plan import load_plan

    stack = str(_stack_file(stack))
    plan = load_plan(stack)
    if nodes is None or nodes == len(plan.nodes):
        return _with_boot_macs(stack, plan)
    if nodes < 1:
        raise InputError(f"--nodes: {nodes} must be at least 1")
    if nodes > 200:
        raise InputError(f"--nodes: {nodes} is more than the lab's 200 hosts")
    if nodes < len(plan.nodes):
        plan.nodes = plan.nodes[:nodes]
        return stack, plan
    data = yaml.safe_load(_stack_file(stack).read_text())
    pools = data["config"]["gpudc:pools"]
    counted = [p for p in pools if "count" in p]
    if not counted:
        raise InputError(f"--nodes: stack {stack} has no pool with a `count` to enlarge")
    counted[0]["count"] += nodes - len(plan.nodes)
    derived = _derived_stack(data, plan.site.name)
    plan = load_plan(derived)
    if len(plan.nodes) != nodes:
        raise InputError(f"--nodes: could not size stack {stack} to {nodes} hosts (got {len(plan.nodes)})")
    return _with_boot_macs(derived, plan)


def _derived_stack(data: dict[str, Any], site: str) -> str:
    """A stack the lab derived from the one asked for (more nodes, boot MACs), in the run dir."""
    derived = st.run_dir() / "stacks" / f"Pulumi.{site}.yaml"
    derived.parent.mkdir(parents=True, exist_ok=True)
    derived.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(derived)


def _with_boot_macs(stack: str, plan: Plan) -> tuple[str, Plan]:
    """Kea reserves the boot network's addresses by MAC: a lab node the stack gives no boot MAC gets a
    locally administered one (02:67:64:...), written into a derived stack in the run dir."""
    from gpudc.plan import load_plan

    missing = boot_network.missing_macs(plan) if boot_network.boot_segment(plan) else []
    if not missing:
        return stack, plan
    data = yaml.safe_load(Path(stack).read_text())
    macs = data["config"].setdefault("gpudc:macs", {})
    taken = {n.boot_mac.lower() for n in plan.nodes if n.boot_mac}
    candidates = (f"02:67:64:00:{i >> 8:02x}:{i & 0xFF:02x}" for i in range(1, 0x10000))
    free = (mac for mac in candidates if mac not in taken)  # never one the stack gives another node
    for node in plan.nodes:
        if node.name in missing:
            macs.setdefault(node.name, {})["boot"] = next(free)
    derived = _derived_stack(data, plan.site.name)
    return derived, load_plan(derived)


def _plan_for(lab: dict[str, Any]) -> Plan:
    from gpudc.plan import load_plan

    return load_plan(lab["stack"])


def _controller_interface(plan: Plan) -> ipaddress.IPv4Interface:
    """The lab controller's in-band address: the plan's boot server (which serves apt, the stand-in
    repository and the seeds), never the gateway address the fabric's leaves own."""
    if not plan.boot_servers:
        raise InputError("lab: the plan has no boot server (networks.boot_servers or an in-band reserve)")
    from gpudc.plan.addresses import network_of

    address = plan.boot_servers[0]
    held = network_of(plan, address)
    if held is None or held[0] != "inband":
        raise InputError(f"lab: boot server {address} is in no in-band prefix of the plan")
    return ipaddress.IPv4Interface(f"{address}/{ipaddress.ip_network(held[1]).prefixlen}")


def _pool_gateway(plan: Plan, network: str) -> ipaddress.IPv4Interface:
    for pool in plan.pools:
        if pool.network == network and pool.prefixes:
            prefix = ipaddress.ip_network(pool.prefixes[0])
            return ipaddress.IPv4Interface(f"{prefix.network_address + 1}/{prefix.prefixlen}")
    raise InputError(f"lab: the plan has no {network} address pool")


# --- simulated GPU pieces (from the simulated NVML area) ---------------------------------------


def _gpu_state_module() -> Any | None:
    if importlib.util.find_spec("gpudc.lab.gpu_state") is None:
        return None
    import gpudc.lab.gpu_state as gpu_state

    return gpu_state


def _nvml_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(NVML_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(NVML_DIR)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_artefacts(progress: Progress = _quiet) -> dict[str, bool]:
    """libnvidia-ml.so.1 (cached by source hash), pynvml.py from our venv, the lspci shim."""
    out = hosts.artefact_dir()
    out.mkdir(parents=True, exist_ok=True)
    have = {"nvml": False, "pynvml": False, "lspci": False}
    spec = importlib.util.find_spec("gpudc.lab.nvml")
    if spec is not None:
        import gpudc.lab.nvml as nvml

        if hasattr(nvml, "build_library"):
            cached = rootfs.cache_dir() / f"nvml-{_nvml_hash()}" / "libnvidia-ml.so.1"
            if not cached.exists():
                progress("building the simulated libnvidia-ml.so.1")
                with tempfile.TemporaryDirectory() as tmp:
                    built = nvml.build_library(Path(tmp))
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(built, cached)
            shutil.copy2(cached, out / "libnvidia-ml.so.1")
            have["nvml"] = True
    pyspec = importlib.util.find_spec("pynvml")
    if pyspec is not None and pyspec.origin:
        shutil.copy2(pyspec.origin, out / "pynvml.py")
        have["pynvml"] = True
    if (SHIM_DIR / "lspci").exists():
        shutil.copy2(SHIM_DIR / "lspci", out / "lspci")
        have["lspci"] = True
    # the stand-in measuring tools (dcgmi, all_reduce_perf, nvbandwidth, ib_write_bw, mpirun, ...)
    shims = out / "shims"
    shims.mkdir(exist_ok=True)
    for tool in sorted(SHIM_DIR.iterdir()):
        if tool.is_file() and tool.name != "lspci" and not tool.name.startswith((".", "_")):
            shutil.copy2(tool, shims / tool.name)
    return have


def healthy_gpu(node: Node | None, hardware_faults: list[list[Any]]) -> tuple[dict[str, Any], list[str]]:
    """A host's GPU state on a fresh install: healthy, plus the faults that live in hardware."""
    gpu_state = _gpu_state_module()
    if gpu_state is None or node is None:
        return {}, []
    state: dict[str, Any] = gpu_state.healthy_state(node)
    log: list[str] = []
    for fault, arg in hardware_faults:
        state, lines = gpu_state.apply_fault(state, fault, arg)
        log += list(lines)
    return state, log


# --- up / down ------------------------------------------------------------------------------


def _bmc_password(site: str) -> Path:
    return secrets.secret_file(secrets.site_secret_dir(site) / "lab-bmc-password",
                               lambda: pysecrets.token_urlsafe(24).encode())


def _write_htpasswd(site: str) -> Path:
    import bcrypt

    password = _bmc_password(site).read_text().strip().encode()
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds=4)).decode()
    path = st.run_dir() / "bmc" / "htpasswd"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{BMC_USERNAME}:{hashed}\n")
    return path


def write_known_hosts(lab: dict[str, Any]) -> Path:
    lines = []
    for rec in lab["hosts"]:
        _, public = secrets.host_key(lab["site"], rec["name"])
        lines.append(secrets.known_hosts_line(rec["name"], [rec["address"]], public))
    path = st.run_dir() / "known_hosts"
    path.write_text("\n".join(lines) + "\n")
    return path


def _host_records(plan: Plan, bmc_net: ipaddress.IPv4Interface) -> list[dict[str, Any]]:
    recs = []
    for index, node in enumerate(plan.nodes):
        address = node.addresses["inband"]
        bmc = node.bmc_address
        for value, what in ((address, "inband"), (bmc, "bmc")):
            if ipaddress.ip_address(value) not in ipaddress.ip_network(net.LAB_RANGE):
                raise InputError(f"lab: {node.name}: {what} address {value} is outside {net.LAB_RANGE}")
        recs.append(
            {
                "name": node.name,
                "index": index,
                "address": address,
                "bmc_address": bmc,
                "sku": node.sku,
                "pool": node.pool,
                "pid": None,
                "power": "On",
                "faults": [],
                "fault_labels": [],  # the faults as injected, with their arguments ("xid 79:2")
                "hardware_faults": [],
                "boot_override": "None",
                "generation": 0,
            }
        )
    return recs


def up(stack: str = "lab", nodes: int | None = None, progress: Progress = _quiet) -> dict[str, Any]:
    """Bring the lab up (or return the status of the lab already up with this stack/size)."""
    require_lab_dependencies()
    _require_root()
    with st.locked():
        existing = st.load()
        if existing is not None:
            same = existing.get("requested") == [stack, nodes] or (nodes is None and existing["stack_arg"] == stack)
            if same and all(hosts.running(r) or r["power"] == "Off" for r in existing["hosts"]):
                return status()
            raise GpudcError(
                f"lab: already up ({len(existing['hosts'])} hosts of stack {existing['stack_arg']}); "
                "run `gpudc lab down` first"
            )
        leftovers = net.lab_netns() or net.lab_links() or hosts.lab_mounts()
        if leftovers:
            progress("cleaning up the remains of an earlier lab")
            _teardown(None)
        try:
            return _bring_up(stack, nodes, progress)
        except BaseException as exc:
            progress("lab up failed; cleaning up")
            with contextlib.suppress(Exception):
                _teardown(st.load())
            if isinstance(exc, GpudcError):
                raise
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise GpudcError(f"lab up failed: {type(exc).__name__}: {exc}") from exc


def _bring_up(stack: str, nodes: int | None, progress: Progress) -> dict[str, Any]:
    t0 = time.monotonic()
    net.ensure_blackhole()
    for tool in ("systemd-nspawn", "mmdebstrap", "zstd", "ip"):
        if shutil.which(tool) is None:
            raise GpudcError(f"lab: `{tool}` is not installed; see ci/apt-packages.txt")
    had_nspawn_dir = Path("/run/systemd/nspawn").exists()
    st.run_dir().mkdir(parents=True, exist_ok=True, mode=0o755)
    stack_used, plan = lab_plan(stack, nodes)
    controller = _controller_interface(plan)
    oob_gw = _pool_gateway(plan, "oob")
    recs = _host_records(plan, oob_gw)
    lab: dict[str, Any] = {
        "stack": stack_used,
        "stack_arg": stack,
        "requested": [stack, nodes],
        "site": plan.site.name,
        "domain": _domain(plan),
        "bridge_address": str(controller.ip),
        "bridge_prefixlen": controller.network.prefixlen,
        "oob_gateway": str(oob_gw),
        "nspawn_dir_existed": had_nspawn_dir,
        "services": {},
        "gpu": False,
        "hosts": recs,
        "started": time.time(),
    }
    hosts.mount_tmpfs()
    st.save(lab)
    tarball = rootfs.tarball_path()
    if not tarball.exists():
        progress("building the host root filesystem (first run: about a minute)")
    tarball = rootfs.ensure_rootfs(progress=False)
    progress("unpacking the root filesystem")
    rootfs.extract(tarball, hosts.base_dir())
    have = build_artefacts(progress)
    lab["gpu"] = have["nvml"] and _gpu_state_module() is not None
    progress(f"network: bridge {net.BRIDGE}, {len(recs)} namespaces")
    net.create_bridge([str(controller), str(oob_gw)])
    for rec in recs:
        net.add_bridge_address(f"{rec['bmc_address']}/32")
    render_dir = _render_tree(plan)
    segment = boot_network.boot_segment(plan)
    if segment is not None:
        progress(f"boot network: {len(segment.leaves)} leaves and their spines with FRR, relays on "
                 f"{', '.join(segment.leaves)}, Kea at {controller.ip}")
        lab["fabric"] = boot_network.start(lab, plan, render_dir)
    else:  # no relayed boot network in the plan: hosts on the bridge with their planned addresses
        net.create_hosts(
            [(r["name"], r["index"], f"{r['address']}/{controller.network.prefixlen}") for r in recs]
        )
    for rec in recs:
        rec["netns"] = net.netns_name(rec["name"])
        rec["veth"] = net.veth_name(rec["index"])
    st.save(lab)
    progress("preparing host overlays")
    secrets.controller_key(lab["site"])
    for rec in recs:
        secrets.host_key(lab["site"], rec["name"])
    by_name = {n.name: n for n in plan.nodes}

    def prepare(rec: dict[str, Any]) -> None:
        hosts.mount_overlay(rec["name"])
        gpu, log = healthy_gpu(by_name.get(rec["name"]), rec["hardware_faults"]) if lab["gpu"] else ({}, [])
        hosts.customize(lab, rec, gpu)
        lab_slurm.customize_host(rec, by_name.get(rec["name"]))
        hosts.append_kernel_log(rec, log)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(prepare, recs))
    progress(f"booting {len(recs)} hosts")
    for rec in recs:
        hosts.start(rec)
    st.save(lab)
    if lab_slurm.start(lab, plan) is not None:
        progress(f"booting slurmctld ({lab['slurm']['name']}, {lab['slurm']['address']})")
    st.save(lab)
    write_known_hosts(lab)
    progress("starting apt-cacher-ng, the NVIDIA stand-in repo and the BMCs")
    bridge = lab["bridge_address"]
    lab["services"]["apt_cacher_ng"] = services.start_apt_cacher(bridge, hosts.APT_PORT)
    repo_link = st.run_dir() / "nvidia-repo"
    with contextlib.suppress(FileNotFoundError):
        repo_link.unlink()
    services.nvidia_repo_dir().mkdir(parents=True, exist_ok=True)
    repo_link.symlink_to(services.nvidia_repo_dir())
    lab["services"]["nvidia_repo"] = services.start_repo_server(bridge, hosts.REPO_PORT)
    _write_htpasswd(lab["site"])
    st.save(lab)
    lab["services"]["bmc"] = services.start_bmc_server()
    st.save(lab)
    progress(f"rendering the site and serving its seeds at {bridge} (gpudc boot serve)")
    lab["services"]["seed"] = services.start_seed_server(lab["stack"], render_dir, bridge)
    lab["services"]["seed_https"] = services.start_seed_server(lab["stack"], render_dir, bridge, 443, site_ca=True)
    st.save(lab)
    missing = hosts.wait_ready(recs)
    if missing:
        tails = []
        for name in missing:
            log = hosts.log_dir() / f"{name}.log"
            text = log.read_text(errors="replace")[-600:] if log.exists() else "(no log)"
            tails.append(f"{name}: {text.strip()}")
        raise GpudcError("lab: hosts did not answer SSH in time: " + "; ".join(tails))
    for rec in recs:
        if not services.wait_port(rec["bmc_address"], BMC_PORT, timeout=15):
            raise GpudcError(f"lab: BMC of {rec['name']} did not listen on {rec['bmc_address']}:{BMC_PORT}")
    lab_slurm.wait_ready(lab)
    lab["up_seconds"] = round(time.monotonic() - t0, 2)
    st.save(lab)
    doc = status()
    progress("stand-in NVIDIA packages")
    ensure_standins(doc)
    write_access_file(doc)
    progress(f"lab up: {len(recs)} hosts in {lab['up_seconds']} s")
    return doc


def _render_tree(plan: Plan) -> Path:
    """The lab site rendered as an operator would (`gpudc render`): the seed server's tree."""
    from gpudc.render import render_site

    out = st.run_dir() / "render"
    render_site(plan, out)
    return out


def seed_url(lab: dict[str, Any], node: str) -> str | None:
    """The node's own seed URL on the lab's HTTPS seed server (None when none runs): a reimaged host
    trusts the site's boot CA, as an installer image built with it would."""
    if not lab.get("services", {}).get("seed_https"):
        return None
    from gpudc.boot.tokens import seed_url as token_url
    from gpudc.render.artifacts import boot_base_url

    return token_url(lab["site"], node, boot_base_url(_plan_for(lab), lab["bridge_address"], "https"))


def access_file() -> Path:
    """The lab's access document (gpudc.access): the lab stack names it as `gpudc:access.file`."""
    return st.run_dir() / "access.json"


def write_access_file(doc: dict[str, Any]) -> Path:
    """How gpudc reaches the lab's hosts and BMCs, in gpudc.access's file format (no secret inside)."""
    document = {
        "addresses": {h["name"]: h["address"] for h in doc["hosts"]},
        "ssh": {"user": "root", "identity": doc["ssh_key"], "known_hosts": doc["known_hosts"]},
        "bmc": {
            "username": doc["bmc_username"],
            "password_file": doc["bmc_password_file"],
            "endpoints": {h["name"]: {"url": h["bmc_url"], "system": h["bmc_system"]} for h in doc["hosts"]},
        },
        "provision_vars": {
            # the unchanged roles install from the lab's stand-in repository...
            "nvidia_repo_url": doc["nvidia_repo_url"],
            "gpudc_repo_trusted": True,
            # ...and, the hosts being containers, never load kernel modules or reboot
            "gpudc_kernel_actions": False,
        },
    }
    if doc.get("slurm"):
        # the slurm role installs the lab's rendered Slurm files and the site's munge key
        document["provision_vars"]["slurm_config_dir"] = doc["slurm"]["config_dir"]
        document["provision_vars"]["slurm_munge_key_file"] = doc["slurm"]["munge_key_file"]
    path = access_file()
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    path.chmod(0o644)
    return path


def ensure_standins(doc: dict[str, Any]) -> bool:
    """Publish the stand-in packages into the lab repo when any is missing; True if it did."""
    from gpudc.provision.standin import deb_filename, publish_to_lab, standin_set

    repo = Path(doc["nvidia_repo_dir"])
    if {p.name for p in repo.glob("*.deb")} == {deb_filename(p) for p in standin_set()}:
        return False
    publish_to_lab(lab_status=doc)
    return True


def _domain(plan: Plan) -> str:
    data = yaml.safe_load(_stack_file(plan.site.stack).read_text()) if _stack_file(plan.site.stack).exists() else {}
    site = (data or {}).get("config", {}).get("gpudc:site", {})
    domain = site.get("domain") if isinstance(site, dict) else None
    return str(domain or f"{plan.site.name}.gpudc.internal")


def down(progress: Progress = _quiet) -> None:
    """Remove everything the lab made: processes, mounts, namespaces, veths, bridge, run dir."""
    _require_root()
    with st.locked():
        _teardown(st.load(), progress)


def _teardown(lab: dict[str, Any] | None, progress: Progress = _quiet) -> None:
    if lab is not None:
        for name, pid in lab.get("services", {}).items():
            services.terminate(pid, str(st.run_dir()) if name != "nvidia_repo" else "repo_server")
        lab_slurm.stop(lab)
        progress(f"stopping {len(lab['hosts'])} hosts")
        for rec in lab["hosts"]:
            pid = rec.get("pid")
            if hosts.running(rec) and pid:
                init = hosts.container_init(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init or pid, 9)
        for rec in lab["hosts"]:
            hosts.stop(rec, force=True, timeout=10)
    for pid in lab_processes():
        services.terminate(pid, str(st.run_dir()))
    hosts.unmount_all()
    net.teardown()
    if lab is not None and not lab.get("nspawn_dir_existed", True):
        shutil.rmtree("/run/systemd/nspawn", ignore_errors=True)
    shutil.rmtree(st.run_dir(), ignore_errors=True)
    net.ensure_blackhole()


def lab_processes() -> list[int]:
    """PIDs of processes whose command line names the lab run dir (nspawn, services)."""
    marker = str(st.run_dir()).encode()
    pids = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


# --- status --------------------------------------------------------------------------------


def _load() -> dict[str, Any]:
    lab = st.load()
    if lab is None:
        raise GpudcError("lab: not up (run `gpudc lab up`)")
    return lab


def host_state(rec: dict[str, Any]) -> str:
    if not hosts.running(rec):
        return "off"
    if hosts.ssh_ready(rec["address"], timeout=0.5):
        return "running"
    return "unreachable"


def gpu_summary(rec: dict[str, Any]) -> dict[str, Any]:
    path = hosts.root_dir(rec["name"]) / hosts.NVML_STATE_PATH
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    gpus = data.get("gpus") if isinstance(data, dict) else None
    summary: dict[str, Any] = {}
    if isinstance(gpus, list):
        summary["count"] = len(gpus)
        names = {g.get("name") for g in gpus if isinstance(g, dict) and g.get("name")}
        if names:
            summary["model"] = ", ".join(sorted(str(n) for n in names))
    for key in ("driver_version", "cuda_version"):
        if key in data:
            summary[key] = data[key]
    return summary


def status() -> dict[str, Any]:
    """The `gpudc lab status --json` document (see the module doc)."""
    lab = _load()
    site = lab["site"]
    key, _ = secrets.controller_key(site)
    bridge = lab["bridge_address"]
    recs = lab["hosts"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        states = list(pool.map(host_state, recs))
    doc = {
        "stack": lab["stack"],
        "site": site,
        "ssh_key": str(key),
        "known_hosts": str(st.run_dir() / "known_hosts"),
        "bmc_username": BMC_USERNAME,
        "bmc_password_file": str(_bmc_password(site)),
        "apt_mirror_url": f"http://{bridge}:{hosts.APT_PORT}/debian",
        "nvidia_repo_url": f"http://{bridge}:{hosts.REPO_PORT}/",
        "nvidia_repo_dir": str(services.nvidia_repo_dir()),
        "hosts": [
            {
                "name": rec["name"],
                "address": rec["address"],
                "bmc_url": f"http://{rec['bmc_address']}:{BMC_PORT}",
                "bmc_system": f"/redfish/v1/Systems/{rec['name']}",
                "state": state,
                "power": rec["power"],
                "faults": list(rec["faults"]),
                "fault_details": list(rec["fault_labels"]),
                "hardware_faults": [f for f, _ in rec["hardware_faults"]],
                "sku": rec["sku"],
                "gpu": gpu_summary(rec),
            }
            for rec, state in zip(recs, states, strict=True)
        ],
    }
    slurm = lab_slurm.status(lab)
    if slurm is not None:
        doc["slurm"] = slurm
    boot = boot_network.summary(lab)
    if boot is not None:
        doc["boot_network"] = boot
    return doc


def network() -> dict[str, Any]:
    """The boot network as its daemons report it: `lab status`'s part plus every switch's BGP
    sessions from FRR (`show bgp summary json`)."""
    lab = _load()
    doc = boot_network.summary(lab)
    if doc is None:
        raise GpudcError("lab: this lab's plan has no relayed boot network (an in-band fabric with leaves)")
    doc["bgp"] = boot_network.bgp_sessions(lab)
    return doc


def refresh_repo() -> None:
    """Regenerate the stand-in NVIDIA repo's index after .deb files were added to nvidia_repo_dir."""
    services.refresh_repo(services.nvidia_repo_dir())


def is_up() -> bool:
    return st.load() is not None


def ssh_command(node: str, *command: str) -> list[str]:
    """The plain ssh command line (strict host keys) that reaches a lab host; for tests and scripts."""
    lab = _load()
    rec = st.host(lab, node)
    key, _ = secrets.controller_key(lab["site"])
    return [
        "ssh", "-i", str(key), "-o", f"UserKnownHostsFile={st.run_dir() / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
        "-o", "GlobalKnownHostsFile=/dev/null", f"root@{rec['address']}", *command,
    ]


def run_on(node: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ssh_command(node, command), capture_output=True, text=True, timeout=timeout)


# --- power and reimage (the BMCs call these) ---------------------------------------------------


def power_state(node: str) -> str:
    """Redfish PowerState of a host: On while its container runs, else Off."""
    lab = _load()
    return "On" if hosts.running(st.host(lab, node)) else "Off"


def boot_override(node: str) -> str:
    return str(st.host(_load(), node).get("boot_override") or "Hdd").replace("None", "Hdd")


def set_boot_override(node: str, target: str) -> None:
    with st.locked():
        lab = _load()
        st.host(lab, node)["boot_override"] = target
        st.save(lab)


def power(node: str, reset_type: str) -> None:
    """Carry out a Redfish ResetType on a host (synchronously: the host is up/down on return)."""
    with st.locked():
        lab = _load()
        rec = st.host(lab, node)
        on = hosts.running(rec)
        if reset_type == "PushPowerButton":
            reset_type = "GracefulShutdown" if on else "On"
        if reset_type in ("ForceOff", "GracefulShutdown"):
            hosts.stop(rec, force=reset_type == "ForceOff")
            rec["power"] = "Off"
        elif reset_type in ("On", "ForceOn", "ForceRestart", "GracefulRestart", "PowerCycle"):
            if on and reset_type not in ("On", "ForceOn"):
                hosts.stop(rec, force=reset_type != "GracefulRestart")
            if not hosts.running(rec):
                if rec.get("boot_override") == "Pxe":
                    _reimage(lab, rec)
                    rec["boot_override"] = "Hdd"
                hosts.start(rec)
            rec["power"] = "On"
        else:
            raise InputError(f"lab: {node}: unsupported reset type {reset_type}")
        st.save(lab)


def reimage(node: str) -> None:
    """What PXE boot + install does to a lab host: fresh OS, same host key, healthy GPUs (but hardware)."""
    with st.locked():
        lab = _load()
        rec = st.host(lab, node)
        was_on = hosts.running(rec)
        hosts.stop(rec, force=True)
        _reimage(lab, rec)
        if was_on:
            hosts.start(rec)
        st.save(lab)


def _reimage(lab: dict[str, Any], rec: dict[str, Any]) -> None:
    hosts.wipe_overlay(rec["name"])
    hosts.mount_overlay(rec["name"])
    rec["faults"] = [f for f, _ in rec["hardware_faults"]]
    rec["fault_labels"] = [_fault_label(f, a) for f, a in rec["hardware_faults"]]
    rec["generation"] = rec.get("generation", 0) + 1
    node = _plan_node(lab, rec["name"])
    gpu, log = healthy_gpu(node, rec["hardware_faults"]) if lab.get("gpu") else ({}, [])
    # a freshly installed node: cloud-init fetches and applies its seed from the boot server
    url = seed_url(lab, rec["name"])
    if url is not None:
        from gpudc.boot.tls import site_ca

        hosts.trust_ca(rec, site_ca(lab["site"])[1].read_text())
    hosts.customize(lab, rec, gpu, seed_url=url)
    lab_slurm.customize_host(rec, node)
    hosts.append_kernel_log(rec, log)


def _plan_node(lab: dict[str, Any], name: str) -> Node | None:
    try:
        return _plan_for(lab).node(name)
    except KeyError:
        return None


# --- faults ----------------------------------------------------------------------------------


def fault_names() -> dict[str, str]:
    """Every fault `inject` knows -> what it does."""
    from gpudc.lab import faults

    return faults.fault_names()


def _host_or_input_error(lab: dict[str, Any], node: str, verb: str) -> dict[str, Any]:
    try:
        return st.host(lab, node)
    except KeyError:
        names = ", ".join(h["name"] for h in lab["hosts"])
        raise InputError(f"lab {verb}: no host {node!r} (hosts: {names})") from None


def _fault_label(fault: str, arg: str | None) -> str:
    return f"{fault} {arg}" if arg else fault


def inject(node: str, fault: str, arg: str | None = None, hardware: bool = False) -> None:
    """Break a GPU or a service on a lab host. `hardware`: a GPU fault that survives reimage."""
    from gpudc.lab import faults

    faults.check(fault, hardware)
    with st.locked():
        lab = _load()
        rec = _host_or_input_error(lab, node, "inject")
        labels = rec["fault_labels"]
        if fault in faults.gpu_faults():
            faults.apply_gpu_fault(rec, fault, arg)
            if hardware:
                rec["hardware_faults"].append([fault, arg])
        else:
            if arg is not None:
                raise InputError(f"lab inject: {fault} takes no argument")
            rec["faults"].append(fault)
            try:
                faults.apply_service_fault(lab, rec, fault)
            except BaseException:
                rec["faults"].remove(fault)
                raise
            labels.append(fault)
            st.save(lab)
            return
        rec["faults"].append(fault)
        labels.append(_fault_label(fault, arg))
        st.save(lab)


def clear(node: str) -> None:
    """Repair a host: healthy GPUs (hardware faults too: an RMA), services and host key restored."""
    from gpudc.lab import faults

    with st.locked():
        lab = _load()
        rec = _host_or_input_error(lab, node, "clear")
        previous = list(rec["faults"])
        rec["faults"] = []
        rec["fault_labels"] = []
        rec["hardware_faults"] = []
        if lab.get("gpu"):
            gpu, _ = healthy_gpu(_plan_node(lab, node), [])
            if gpu:
                hosts.write_gpu_state(rec, gpu)
        (hosts.root_dir(node) / "var/log/kern.log").write_text("")
        faults.restore_services(lab, rec, previous)
        st.save(lab)
