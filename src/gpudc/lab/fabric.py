"""A routed Ethernet fabric of the plan, running for real in network namespaces.

From a Plan and its rendered tree (`gpudc render`), `FabricLab` brings up one fabric (default: the
in-band boot network) the way the switches would run it:

- one namespace per routed switch (`<prefix><switch>`), veth pairs for the planned fabric cables
  named as the rendered configs name the ports (swpN / swpNsM), so the rendered frr.conf applies
  unchanged;
- the data plane NVUE's startup.yaml describes, made with iproute2 from the same plan model
  (`switch_intent` + `dataplane`): loopback /32 on lo; per VNI a bridge named as NVUE's SVI
  (`vlan<VLAN>`: a traditional per-VNI bridge is its own SVI) holding the host ports and the L2 VNI's
  VXLAN device (`local <loopback>`, `nolearning`, learning off, ARP/ND suppression); the VRF with its
  table; the L3 VNI's VXLAN device and bridge in the VRF; the leaf's own SVI address on the SVI and
  the VRR anycast gateway as a macvlan `vlan<VLAN>-v0` with the convention's VRR MAC (as Cumulus does);
- zebra + bgpd per switch with their own config, sockets and PID files under the work folder,
  configured from the rendered frr.conf text as it is;
- a boot server namespace (`<prefix>boot`) on a routed port of one boot leaf (in the VRF:
  `ip addr add <leaf loopback>/32 peer <server>/32`, announced by the VRF's `redistribute connected`), so
  host broadcasts never reach it; `kea(conf)` runs the real kea-dhcp4 there;
- `relay_start(leaf)`: isc-dhcp-relay's dhcrelay on a boot leaf, in the VRF, relaying the SVI to the
  planned boot servers (giaddr = the SVI's first address, the leaf's own);
- `attach(node, mac)`: a host namespace on the node's planned leaf port; `dhcp(node)` runs dhclient
  there (private lease/PID files, bounded) and returns the leased address or None.

Kernels without VRF devices (CONFIG_NET_VRF; some VMs) get `vrf=False`: the tenant segment lives in the
default table, there is no L3 VNI (FRR keeps the rendered VRF inactive), and the boot server sits on
the leaf under test. `kernel_features()` says which.

Everything this class makes is named with its prefix and removed by `down()`: namespaces (their
veths go with them) and every process it started, ended by PID. Nothing touches the root namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpudc.catalog import network_conventions
from gpudc.lab.services import stop_child
from gpudc.plan.expand import routed_switches
from gpudc.plan.types import Plan, Segment, Switch
from gpudc.render.artifacts import breakout_factor, cumulus_port

FRR_DIR = Path("/usr/lib/frr")
VXLAN_PORT = 4789
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}


@dataclass(slots=True)
class Port:
    ifname: str  # the Cumulus name on this switch: swpN or swpNsM
    far: str  # the switch or node at the other end
    far_ifname: str  # its interface name there (a switch's Cumulus name; a node's NIC)
    role: str  # fabric | host


@dataclass(slots=True)
class SwitchIntent:
    """What NVUE's startup.yaml asks of one routed switch, as Linux sees it."""

    name: str
    role: str
    asn: int
    loopback: str
    ports: list[Port]
    segment: Segment | None = None
    svi: list[str] = field(default_factory=list)  # own SVI address per prefix, with its length
    vrr_mac: str = ""
    mtu: int = 9216
    vrf_table: int = 1001

    @property
    def svi_name(self) -> str:
        return f"vlan{self.segment.vlan}" if self.segment else ""

    @property
    def vrr_name(self) -> str:
        return f"{self.svi_name}-v0"

    @property
    def l3_bridge(self) -> str:
        return f"vlan{self.segment.vlan}_l3" if self.segment else ""


def _port_names(plan: Plan, switches: dict[str, Switch]) -> dict[tuple[str, str], str]:
    """(device, plan port) -> Cumulus interface name, for every switch end of every cable."""
    rates = {f.name: f.rate_gbps for f in plan.fabrics}
    names: dict[tuple[str, str], str] = {}
    for cable in plan.cables:
        for dev, port in ((cable.a_device, cable.a_port), (cable.b_device, cable.b_port)):
            sw = switches.get(dev)
            if sw is not None:
                names[(dev, port)] = cumulus_port(port, breakout_factor(sw, rates.get(sw.fabric, 0)))
    return names


def fabric_segment(plan: Plan, fabric: str) -> Segment | None:
    """The segment of the fabric's own network (a converged fabric carries others too: not run here)."""
    return next((s for s in plan.segments if s.fabric == fabric and s.network == fabric), None)


def switch_intents(plan: Plan, fabric: str = "inband") -> list[SwitchIntent]:
    """The routed switches of one fabric and what each must run: the same plan model (Switch,
    Segment, cables, conventions) the NVUE template renders from."""
    net = network_conventions()
    switches = {s.name: s for s in routed_switches(plan.switches, plan.fabrics) if s.fabric == fabric}
    names = _port_names(plan, switches)
    segment = fabric_segment(plan, fabric)
    out = []
    for sw in switches.values():
        ports = []
        for cable in plan.cables:
            if sw.name not in (cable.a_device, cable.b_device):
                continue
            here, far, far_port = ((cable.a_port, cable.b_device, cable.b_port) if cable.a_device == sw.name
                                   else (cable.b_port, cable.a_device, cable.a_port))
            role = "fabric" if far in switches else "host"
            ports.append(Port(names[(sw.name, here)], far, names.get((far, far_port), far_port), role))
        ports.sort(key=lambda p: [int(x) for x in p.ifname[3:].split("s")])
        seg = segment if sw.role == "leaf" and segment is not None else None
        svi = ([f"{a}/{g.split('/')[1]}" for a, g in zip(sw.svi[seg.network], seg.gateways, strict=True)]
               if seg else [])
        if sw.asn is None or sw.loopback is None:
            raise ValueError(f"{sw.name}: the plan gives it no ASN or loopback (networks.loopback)")
        out.append(SwitchIntent(sw.name, sw.role, sw.asn, sw.loopback, ports, seg, svi, str(net["vrr_mac"]),
                                int(net["fabric_mtu"]), 1000 + (seg.vlan if seg else 1)))
    return out


def dataplane(intent: SwitchIntent, vrf: bool = True) -> list[list[str]]:
    """iproute2 commands (argv, run inside the switch's namespace) for what startup.yaml describes.
    Fabric and host ports must exist already (veths)."""
    cmds: list[list[str]] = [
        ["ip", "link", "set", "lo", "up"],
        ["ip", "addr", "add", f"{intent.loopback}/32", "dev", "lo"],
    ]
    for p in intent.ports:
        cmds.append(["ip", "link", "set", p.ifname, "mtu", str(intent.mtu), "up"])
    seg = intent.segment
    if seg is None:
        return cmds
    svi, vxmtu = intent.svi_name, str(intent.mtu - 50)
    if vrf:
        cmds += [["ip", "link", "add", seg.vrf, "type", "vrf", "table", str(intent.vrf_table)],
                 ["ip", "link", "set", seg.vrf, "up"]]
    # L2 VNI: the per-VNI bridge (named as NVUE's SVI) with the host ports and the VXLAN device
    cmds += [
        ["ip", "link", "add", svi, "type", "bridge", "stp_state", "0", "mcast_snooping", "0"],
        ["ip", "link", "add", f"vni{seg.vni}", "type", "vxlan", "id", str(seg.vni), "local", intent.loopback,
         "dstport", str(VXLAN_PORT), "nolearning"],
        ["ip", "link", "set", f"vni{seg.vni}", "mtu", vxmtu, "master", svi, "up"],
        ["bridge", "link", "set", "dev", f"vni{seg.vni}", "learning", "off", "neigh_suppress", "on"],
    ]
    for p in intent.ports:
        if p.role == "host":
            cmds.append(["ip", "link", "set", p.ifname, "master", svi])
    if vrf:
        cmds.append(["ip", "link", "set", svi, "master", seg.vrf])
    for a in intent.svi:
        cmds.append(["ip", "addr", "add", a, "dev", svi])
    cmds += [
        ["ip", "link", "set", svi, "up"],
        # VRR: the anycast gateway on a macvlan with the VRR MAC, beside the leaf's own SVI address
        ["ip", "link", "add", "link", svi, "name", intent.vrr_name, "address", intent.vrr_mac,
         "type", "macvlan", "mode", "private"],
    ]
    if vrf:
        cmds.append(["ip", "link", "set", intent.vrr_name, "master", seg.vrf])
    for g in seg.gateways:
        cmds.append(["ip", "addr", "add", g, "dev", intent.vrr_name])
    cmds.append(["ip", "link", "set", intent.vrr_name, "up"])
    if vrf:  # L3 VNI: its VXLAN device on a bridge in the VRF (symmetric routing)
        l3 = intent.l3_bridge
        cmds += [
            ["ip", "link", "add", l3, "type", "bridge", "stp_state", "0"],
            ["ip", "link", "set", l3, "master", seg.vrf],
            ["ip", "link", "add", f"vni{seg.l3vni}", "type", "vxlan", "id", str(seg.l3vni), "local",
             intent.loopback, "dstport", str(VXLAN_PORT), "nolearning"],
            ["ip", "link", "set", f"vni{seg.l3vni}", "mtu", vxmtu, "master", l3, "up"],
            ["bridge", "link", "set", "dev", f"vni{seg.l3vni}", "learning", "off"],
            ["ip", "link", "set", l3, "up"],
        ]
    return cmds


SYSCTLS = {
    "net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1", "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0", "net.ipv6.conf.all.disable_ipv6": "0",
    "net.ipv6.conf.default.disable_ipv6": "0", "net.ipv4.tcp_l3mdev_accept": "1", "net.ipv4.udp_l3mdev_accept": "1",
}


def kernel_features() -> dict[str, bool]:
    """What this kernel can make, tried in a scratch namespace: vrf, vxlan, bridge, macvlan devices."""
    ns = f"gpudc-t-probe-{os.getpid()}"
    found: dict[str, bool] = {}
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True, check=False).returncode != 0:
        return {"vrf": False, "vxlan": False, "bridge": False, "macvlan": False}
    try:
        for kind, args in (("vrf", ["type", "vrf", "table", "10"]),
                           ("vxlan", ["type", "vxlan", "id", "10", "dstport", str(VXLAN_PORT)]),
                           ("bridge", ["type", "bridge"])):
            found[kind] = subprocess.run(["ip", "-n", ns, "link", "add", f"p{kind}", *args],
                                         capture_output=True, check=False).returncode == 0
        found["macvlan"] = found["bridge"] and subprocess.run(
            ["ip", "-n", ns, "link", "add", "link", "pbridge", "name", "pmv", "type", "macvlan"],
            capture_output=True, check=False).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    return found


def kea_in_folder(conf: dict[str, Any], interfaces: list[str], folder: Path, socket_type: str | None = None,
                  debuglevel: int | None = None) -> Path:
    """The rendered kea-dhcp4 config (a dict, changed in place) made to run here: listening on
    `interfaces` (and `socket_type` when given), its lease file, control socket and log in `folder`;
    everything else as rendered. Returns the log file."""
    d4 = conf["Dhcp4"]
    listen: dict[str, Any] = {**d4.get("interfaces-config", {}), "interfaces": interfaces}
    if socket_type is not None:
        listen["dhcp-socket-type"] = socket_type
    d4["interfaces-config"] = listen
    d4["lease-database"] = {**d4.get("lease-database", {}), "name": str(folder / "kea-leases4.csv")}
    if "control-socket" in d4:
        d4["control-socket"] = {**d4["control-socket"], "socket-name": str(folder / "kea4-ctrl.sock")}
    log = folder / "kea.log"
    level: dict[str, Any] = {"severity": "DEBUG", "debuglevel": debuglevel} if debuglevel else {"severity": "INFO"}
    d4["loggers"] = [{"name": "kea-dhcp4", **level, "output_options": [{"output": str(log)}]}]
    return log


def frr_available() -> bool:
    return (FRR_DIR / "zebra").exists() and (FRR_DIR / "bgpd").exists() and shutil.which("vtysh") is not None


class FabricError(RuntimeError):
    pass


class FabricLab:
    """One routed fabric of a plan, live in namespaces. Use as a context manager or call down().

        lab = FabricLab(plan, rendered_dir, workdir)
        lab.up()                       # switches, their data plane and FRR (+ boot server ns)
        lab.wait_established()         # every fabric BGP session Established
        lab.kea(kea_conf_dict)         # the real kea-dhcp4 in the boot server namespace
        lab.relay_start("inband-leaf02")
        lab.attach("gb200-01", mac)    # -> the host's namespace
        lab.dhcp("gb200-01")           # -> leased address or None
        lab.vtysh_json("inband-leaf01", "show bgp summary json")
        lab.down()
    """

    def __init__(self, plan: Plan, rendered: Path, workdir: Path, prefix: str = "gpudc-t-",
                 fabric: str = "inband", vrf: bool | None = None, frr_root: Path | None = None) -> None:
        self.plan, self.rendered, self.workdir, self.prefix, self.fabric = plan, rendered, workdir, prefix, fabric
        self.intents = {i.name: i for i in switch_intents(plan, fabric)}
        if not self.intents:
            raise FabricError(f"the plan has no routed {fabric} fabric")
        self.vrf = kernel_features()["vrf"] if vrf is None else vrf
        self.namespaces: list[str] = []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # key -> process this lab started
        self.hosts: dict[str, str] = {}  # node -> namespace
        self.boot_leaf: str | None = None
        self._veths = 0
        self._frr_root: Path | None = frr_root  # None: /run/<prefix>frr-<pid>/, made on first use

    # -- names ---------------------------------------------------------------------------------
    def ns(self, switch: str) -> str:
        return f"{self.prefix}{switch}"

    @property
    def boot_ns(self) -> str:
        return f"{self.prefix}boot"

    def _dir(self, name: str) -> Path:
        d = self.workdir / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def segment(self) -> Segment:
        seg = fabric_segment(self.plan, self.fabric)
        if seg is None:
            raise FabricError(f"the plan has no segment on the {self.fabric} fabric")
        return seg

    # -- plumbing ------------------------------------------------------------------------------
    def _run(self, ns: str, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=20,
                             check=False, env=_ENV)
        if check and res.returncode != 0:
            raise FabricError(f"{ns}: {' '.join(argv)}: {res.stderr.strip() or res.stdout.strip()}")
        return res

    def _add_ns(self, ns: str) -> None:
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True, timeout=10)
        self.namespaces.append(ns)
        for key, value in SYSCTLS.items():
            self._run(ns, ["sysctl", "-qw", f"{key}={value}"], check=False)

    def _veth(self, ns_a: str, a: str, ns_b: str, b: str, mac_b: str | None = None) -> None:
        self._veths += 1
        tmp_a, tmp_b = f"gpt{self._veths}a", f"gpt{self._veths}b"  # made in the namespaces, never in the root one
        subprocess.run(["ip", "-n", ns_a, "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b, "netns", ns_b],
                       check=True, capture_output=True, timeout=10)
        self._run(ns_a, ["ip", "link", "set", tmp_a, "name", a])
        self._run(ns_b, ["ip", "link", "set", tmp_b, "name", b])
        if mac_b:
            self._run(ns_b, ["ip", "link", "set", b, "address", mac_b])

    def _start(self, key: str, ns: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=_ENV)
        self.procs[key] = proc
        return proc

    def _stop(self, key: str) -> None:
        proc = self.procs.pop(key, None)
        if proc is not None:
            stop_child(proc)

    # -- the fabric ----------------------------------------------------------------------------
    def up(self, boot_leaf: str | None = None, boot_server: bool = True) -> None:
        """Namespaces, cables, data plane and FRR of every switch; the boot server namespace on
        `boot_leaf` (default: the first leaf of the segment; without VRF, pass the leaf under test).
        `boot_server=False`: no boot server namespace (the caller attaches its own, see `attach_root`)."""
        try:
            self._up(boot_leaf, boot_server)
        except BaseException:
            self.down()
            raise

    def _up(self, boot_leaf: str | None, boot_server: bool = True) -> None:
        for name in self.intents:
            self._add_ns(self.ns(name))
        done: set[tuple[str, str]] = set()
        for intent in self.intents.values():
            for p in intent.ports:
                if p.role != "fabric" or (p.far, p.far_ifname) in done:
                    continue
                self._veth(self.ns(intent.name), p.ifname, self.ns(p.far), p.far_ifname)
                done.add((intent.name, p.ifname))
        for intent in self.intents.values():  # host ports are made (and bridged) by attach()
            ns = self.ns(intent.name)
            hosts = {p.ifname for p in intent.ports if p.role == "host"}
            for argv in dataplane(intent, self.vrf):
                if argv[:3] == ["ip", "link", "set"] and argv[3] in hosts:
                    continue
                self._run(ns, argv)
        if self.segment.dhcp_relay and boot_server:
            self._boot_server(boot_leaf or self.segment.leaves[0])
        for intent in self.intents.values():
            self._frr(intent)

    def _boot_server(self, leaf: str) -> None:
        """The boot server on a routed port of `leaf` (unnumbered: the leaf's loopback, peer the server's
        /32, announced by `redistribute connected` in the VRF), never on the segment."""
        self.boot_leaf = leaf
        intent = self.intents[leaf]
        server = self.segment.dhcp_relay[0]
        own = intent.loopback  # IP unnumbered: the loopback, never the SVI address (the relay's giaddr)
        sw = next(s for s in self.plan.switches if s.name == leaf)
        port = cumulus_port(str(sw.ports), 1)  # the leaf's last port: never cabled by the plan's sizing
        self._add_ns(self.boot_ns)
        self._veth(self.ns(leaf), port, self.boot_ns, "boot0")
        leaf_ns = self.ns(leaf)
        if self.vrf:
            self._run(leaf_ns, ["ip", "link", "set", port, "master", self.segment.vrf])
        self._run(leaf_ns, ["ip", "addr", "add", f"{own}/32", "peer", f"{server}/32", "dev", port])
        self._run(leaf_ns, ["ip", "link", "set", port, "up"])
        self._run(self.boot_ns, ["ip", "link", "set", "lo", "up"])
        # a plain /32 here (Kea binds to a peer address's far end) and a host route to the leaf
        self._run(self.boot_ns, ["ip", "addr", "add", f"{server}/32", "dev", "boot0"])
        self._run(self.boot_ns, ["ip", "link", "set", "boot0", "up"])
        self._run(self.boot_ns, ["ip", "route", "add", f"{own}/32", "dev", "boot0"])
        self._run(self.boot_ns, ["ip", "route", "add", "default", "via", own, "dev", "boot0"])

    def _frr(self, intent: SwitchIntent) -> None:
        d = self._frr_dir(intent.name)
        conf = d / "frr.conf"
        conf.write_text((self.rendered / "switches" / intent.name / "frr.conf").read_text())
        shutil.chown(conf, "frr", "frr")
        ns = self.ns(intent.name)
        common = ["--vty_socket", str(d), "-z", str(d / "zserv.api"), "-P", "0"]
        self._start(f"{intent.name}/zebra", ns, [str(FRR_DIR / "zebra"), "-f", str(conf), "-i", str(d / "zebra.pid"),
                                                 *common], d / "zebra.log")
        _wait(lambda: (d / "zserv.api").exists(), 10, lambda: f"{intent.name}: zebra did not start: {_tail(d / 'zebra.log')}")
        self._start(f"{intent.name}/bgpd", ns, [str(FRR_DIR / "bgpd"), "-f", str(conf), "-i", str(d / "bgpd.pid"),
                                                *common], d / "bgpd.log")
        _wait(lambda: (d / "bgpd.vty").exists(), 10, lambda: f"{intent.name}: bgpd did not start: {_tail(d / 'bgpd.log')}")

    def _frr_dir(self, switch: str) -> Path:
        """FRR's config, sockets, PID and log files of one switch: a folder the frr user owns (the
        daemons drop to it), under /run/<prefix>frr-<pid>/, removed by down()."""
        if self._frr_root is None:
            self._frr_root = Path(f"/run/{self.prefix}frr-{os.getpid()}")
        self._frr_root.mkdir(mode=0o755, exist_ok=True)
        d = self._frr_root / switch
        if not d.exists():
            d.mkdir(mode=0o755)
            shutil.chown(d, "frr", "frr")
        return d

    def vtysh(self, switch: str, command: str) -> str:
        d = self._frr_dir(switch)
        return self._run(self.ns(switch), ["vtysh", "--vty_socket", str(d), "-c", command]).stdout

    def vtysh_json(self, switch: str, command: str) -> Any:
        return json.loads(self.vtysh(switch, command) or "{}")

    def bgp_summary(self, switch: str) -> dict[str, str]:
        """Fabric BGP sessions of a switch: peer interface -> state (underlay, IPv4 unicast)."""
        data = self.vtysh_json(switch, "show bgp summary json")
        peers = data.get("ipv4Unicast", {}).get("peers", {})
        return {name: str(p.get("state")) for name, p in peers.items()}

    def wait_established(self, timeout: float = 30) -> dict[str, dict[str, str]]:
        """Every fabric port of every switch has its BGP session Established (bounded wait)."""
        want = {n: {p.ifname for p in i.ports if p.role == "fabric"} for n, i in self.intents.items()}
        last: dict[str, dict[str, str]] = {}

        def ready() -> bool:
            nonlocal last
            last = {n: self.bgp_summary(n) for n in self.intents}
            return all(set(last[n]) >= want[n] and all(last[n][p] == "Established" for p in want[n]) for n in want)

        _wait(ready, timeout, lambda: f"BGP sessions not all Established: {last}")
        return last

    # -- DHCP ----------------------------------------------------------------------------------
    def kea(self, conf: dict[str, Any], binary: str = "/usr/sbin/kea-dhcp4") -> Path:
        """The real kea-dhcp4 in the boot server namespace, with `conf` (the rendered config) bound
        to its port and to lease/log files under the work folder. Returns the log file."""
        d = self._dir("boot")
        log = kea_in_folder(conf, ["boot0"], d, debuglevel=55)  # debug: the subnet chosen by giaddr
        (d / "kea.json").write_text(json.dumps(conf))
        env = {**_ENV, "KEA_PIDFILE_DIR": str(d), "KEA_LOCKFILE_DIR": str(d)}
        with (d / "kea.out").open("ab") as out:
            self.procs["boot/kea"] = subprocess.Popen(
                ["ip", "netns", "exec", self.boot_ns, binary, "-c", str(d / "kea.json")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        proc = self.procs["boot/kea"]

        def started() -> bool:
            if proc.poll() is not None:
                raise FabricError(f"kea-dhcp4 exited: {(d / 'kea.out').read_text()[-2000:]}")
            return log.exists() and "DHCP4_STARTED" in log.read_text()

        _wait(started, 10, "kea-dhcp4 did not start")
        return log

    def relay_start(self, leaf: str, upstream: list[str] | None = None) -> None:
        """dhcrelay on a boot leaf: the SVI (downstream) to the segment's boot servers; in the VRF.
        `upstream`: the interfaces toward the servers (default: the L3 VNI's bridge with a VRF, and
        the routed port to the boot server namespace on its leaf)."""
        intent = self.intents[leaf]
        seg = self.segment
        if not seg.dhcp_relay:
            raise FabricError(f"{self.fabric}: the plan relays DHCP nowhere")
        d = self._dir(leaf)
        upstream = list(upstream) if upstream is not None else [intent.l3_bridge] if self.vrf else []
        if leaf == self.boot_leaf:
            sw = next(s for s in self.plan.switches if s.name == leaf)
            upstream.append(cumulus_port(str(sw.ports), 1))
        # -a: the relay agent option (circuit-id: the SVI) on what it relays; -m discard: a request that
        # already carries one was relayed by another leaf (its unicast to the server can reach this
        # one flooded over the VNI) and is not relayed again
        argv = ["dhcrelay", "-d", "-4", "-a", "-m", "discard", "-pf", str(d / "dhcrelay.pid")]
        if intent.svi_name in upstream:  # the server is on the segment itself: the SVI both ways
            argv += ["-i", intent.svi_name]
        else:
            argv += ["-id", intent.svi_name]
        for u in upstream:
            if u != intent.svi_name:
                argv += ["-iu", u]
        argv += list(seg.dhcp_relay)
        if self.vrf:
            argv = ["ip", "vrf", "exec", seg.vrf, *argv]
        self._start(f"{leaf}/dhcrelay", self.ns(leaf), argv, d / "dhcrelay.log")
        time.sleep(0.3)
        proc = self.procs[f"{leaf}/dhcrelay"]
        if proc.poll() is not None:
            raise FabricError(f"{leaf}: dhcrelay exited: {(d / 'dhcrelay.log').read_text()[-2000:]}")

    def relay_stop(self, leaf: str) -> None:
        self._stop(f"{leaf}/dhcrelay")

    def attach(self, node: str, mac: str | None = None) -> str:
        """A host namespace for `node` on its planned leaf port (eth0 with `mac`, default the plan's
        boot MAC). Returns the namespace."""
        leaf, port = self.leaf_port(node)
        n = self.plan.node(node)
        mac = mac or n.boot_mac
        ns = f"{self.prefix}{node}"
        self._add_ns(ns)
        self._veth(self.ns(leaf), port, ns, "eth0", mac)
        intent = self.intents[leaf]
        self._run(self.ns(leaf), ["ip", "link", "set", port, "mtu", str(intent.mtu), "master", intent.svi_name, "up"])
        self._run(ns, ["ip", "link", "set", "lo", "up"])
        self._run(ns, ["ip", "link", "set", "eth0", "up"])
        self.hosts[node] = ns
        return ns

    def attach_root(self, leaf: str, bridge: str, link: str) -> str:
        """Bridge a root-namespace bridge (a controller on the segment, as a head node is) into the
        segment on `leaf`'s last port, an access port of its SVI bridge. `link` names the root side
        of the veth; deleting the leaf's namespace deletes it. Returns the leaf's port name."""
        sw = next(s for s in self.plan.switches if s.name == leaf)
        port = cumulus_port(str(sw.ports), 1)  # never cabled by the plan's sizing
        intent = self.intents[leaf]
        subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", "gpt-root", "netns", self.ns(leaf)],
                       check=True, capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "set", link, "master", bridge, "up"], check=True, capture_output=True, timeout=10)
        self._run(self.ns(leaf), ["ip", "link", "set", "gpt-root", "name", port])
        self._run(self.ns(leaf), ["ip", "link", "set", port, "master", intent.svi_name, "up"])
        return port

    def pids(self) -> dict[str, int]:
        """key (switch/daemon) -> PID of every process this lab started and that still runs."""
        return {key: proc.pid for key, proc in self.procs.items() if proc.poll() is None}

    def leaf_port(self, node: str) -> tuple[str, str]:
        """The leaf and port of the node's first port on this fabric (a dual-homed node's boot port: it
        PXE boots there, through the bond's LACP bypass, before its own bond runs; this kernel may have
        no bonding, so the lab cables that port alone)."""
        found = sorted((p.far_ifname, intent.name, p.ifname) for intent in self.intents.values()
                       for p in intent.ports if p.role == "host" and p.far == node)
        if not found:
            raise FabricError(f"{node}: no port on the {self.fabric} fabric")
        return found[0][1], found[0][2]

    def dhcp(self, node: str, timeout: int = 8) -> str | None:
        """dhclient on the node's eth0 (private lease/PID files, no address applied): the leased
        address, or None when no lease came within `timeout` seconds."""
        ns = self.hosts[node]
        d = self._dir(f"host-{node}")
        lease, conf = d / "dhclient.leases", d / "dhclient.conf"
        lease.unlink(missing_ok=True)
        conf.write_text(f"timeout {timeout};\nretry 1;\ninitial-interval 1;\n")
        argv = ["dhclient", "-4", "-1", "-d", "-v", "-cf", str(conf), "-lf", str(lease), "-pf", str(d / "dhclient.pid"),
                "-sf", "/bin/true", "eth0"]
        key = f"{node}/dhclient"
        proc = self._start(key, ns, argv, d / "dhclient.log")
        try:
            proc.wait(timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            pass
        finally:
            self._stop(key)
        text = lease.read_text() if lease.exists() else ""
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("fixed-address "):
                return line.split()[1].rstrip(";")
        return None

    # -- teardown ------------------------------------------------------------------------------
    def down(self) -> None:
        """End every process this lab started (by PID), then delete its namespaces."""
        for key in reversed(list(self.procs)):
            self._stop(key)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)
        self.namespaces.clear()
        self.hosts.clear()
        if self._frr_root is not None:
            for switch in self.intents:  # keep FRR's logs beside the rest of the work folder
                logs = self._frr_root / switch
                for log in logs.glob("*.log"):
                    shutil.copy(log, self._dir(switch) / log.name)
            shutil.rmtree(self._frr_root, ignore_errors=True)
            self._frr_root = None

    def __enter__(self) -> FabricLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def _wait(ready: Callable[[], bool], timeout: float, message: str | Callable[[], str]) -> None:
    end = time.monotonic() + timeout
    while True:
        if ready():
            return
        if time.monotonic() > end:
            raise FabricError(message() if callable(message) else message)
        time.sleep(0.25)



def _tail(path: Path, n: int = 2000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else f"{path}: no log"
