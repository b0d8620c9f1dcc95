"""The lab's in-band boot network, live: hosts take their planned addresses by DHCP through relays.

When the lab's plan has a routed in-band fabric whose leaves relay DHCP (the plan's boot segment),
`gpudc lab up` runs it as gpudc.lab.fabric builds it: one namespace per leaf and spine with the
rendered frr.conf in real zebra + bgpd (BGP unnumbered, EVPN), the NVUE intent as Linux devices, and
isc-dhcp-relay's dhcrelay on every boot leaf. The controller is the boot server on the segment (as a
head node is): the lab bridge is an access port of the first leaf, holding the boot server address
that serves apt, the stand-in repository and the seeds. Kea runs the rendered kea-dhcp4.conf there
with UDP sockets, which answer relayed requests only, so a lease proves its relay (`kea_config`). Every host is cabled
to its planned leaf port with its planned boot MAC and runs systemd-networkd's DHCP client.

Everything runs in the lab's namespaces (gpudc-lab-*); the processes carry the lab run folder in
their command lines, so `lab down` ends them by PID with the rest.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from gpudc.errors import GpudcError
from gpudc.lab import net, services
from gpudc.lab import state as st
from gpudc.lab.fabric import FabricError, FabricLab, kea_in_folder
from gpudc.plan.expand import BOOT_NETWORK
from gpudc.plan.types import Plan, Segment

#: Root side of the veth that puts the lab bridge (the controller) on the first boot leaf.
ROOT_LINK = f"{net.VETH_PREFIX}fab0"
_FORWARDED = re.compile(r"Forwarded BOOTREPLY for ([0-9a-f:]{17}) to")


def boot_segment(plan: Plan) -> Segment | None:
    """The plan's boot network segment when its leaves relay DHCP; None: no live boot network."""
    return next((s for s in plan.segments if s.network == BOOT_NETWORK and s.dhcp_relay), None)


def missing_macs(plan: Plan) -> list[str]:
    return [n.name for n in plan.nodes if not n.boot_mac]


def work_dir() -> Path:
    return st.run_dir() / "fabric"


def frr_dir() -> Path:
    return st.run_dir() / "frr"


def kea_dir() -> Path:
    return st.run_dir() / "kea"


def start(lab: dict[str, Any], plan: Plan, render_dir: Path) -> dict[str, Any]:
    """Switches, FRR, the controller on the segment, Kea and the relays; every host's namespace on
    its leaf port (its eth0 has no address: the host's DHCP client gets it). Returns lab["fabric"]."""
    segment = boot_segment(plan)
    if segment is None:
        raise GpudcError("lab: the plan has no relayed boot network")
    if missing_macs(plan):
        raise GpudcError(f"lab: no boot MAC for {', '.join(missing_macs(plan))} (Kea reserves by MAC)")
    fabric = FabricLab(plan, render_dir, work_dir(), prefix=net.NETNS_PREFIX, frr_root=frr_dir())
    try:
        fabric.up(boot_server=False)
        fabric.wait_established(timeout=60)
        fabric.attach_root(segment.leaves[0], net.BRIDGE, ROOT_LINK)
        kea = start_kea(render_dir, lab["bridge_address"])
        for leaf in segment.leaves:
            # the boot server is on the segment itself: the SVI both ways (the VRF's, if any)
            svi = fabric.intents[leaf].svi_name
            fabric.relay_start(leaf, upstream=[svi])
        for rec in lab["hosts"]:
            fabric.attach(rec["name"])
    except FabricError as exc:
        raise GpudcError(f"lab: boot network: {exc}") from None
    return {
        "switches": sorted(fabric.intents),
        "leaves": list(segment.leaves),
        "vrf": fabric.vrf,
        "boot_servers": list(segment.dhcp_relay),
        "kea": kea,
        "pids": fabric.pids(),
        "ports": {rec["name"]: ":".join(fabric.leaf_port(rec["name"])) for rec in lab["hosts"]},
        "macs": {rec["name"]: (plan.node(rec["name"]).boot_mac or "").lower() for rec in lab["hosts"]},
        "giaddr": {leaf: fabric.intents[leaf].svi[0].split("/")[0] for leaf in segment.leaves},
    }


def kea_config(render_dir: Path, address: str) -> dict[str, Any]:
    """The rendered kea-dhcp4.conf as the lab runs it: interface, file and socket paths change, and
    the socket type. The rendered config uses raw sockets, so a boot server also serves clients on
    its own links (BMCs on the OOB network); the lab's controller sits on the in-band segment itself,
    where raw sockets would answer every host directly. UDP sockets bound to its address take relayed
    requests only (Kea's UDP mode cannot answer a client without an address), so a lease proves the
    relay that carried it."""
    from gpudc.render.checks import kea_json

    conf = kea_json(render_dir / "dhcp" / "kea-dhcp4.conf")
    kea_in_folder(conf, [f"{net.BRIDGE}/{address}"], kea_dir(), socket_type="udp")
    return conf


def start_kea(render_dir: Path, address: str) -> int:
    kea_dir().mkdir(parents=True, exist_ok=True)
    path = kea_dir() / "kea-dhcp4.json"
    path.write_text(json.dumps(kea_config(render_dir, address), indent=1) + "\n")
    os.chmod(path, 0o600)  # it holds the seed tokens, as the rendered file does
    env = dict(os.environ, KEA_PIDFILE_DIR=str(kea_dir()), KEA_LOCKFILE_DIR=str(kea_dir()))
    pid = services.spawn(["kea-dhcp4", "-c", str(path)], kea_dir() / "kea.out", env=env)
    log = kea_dir() / "kea.log"
    deadline = time.monotonic() + 15
    while not (log.exists() and "DHCP4_STARTED" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not (log.exists() and "DHCP4_STARTED" in log.read_text()):
        services.terminate(pid, str(st.run_dir()))
        tail = (kea_dir() / "kea.out").read_text(errors="replace")[-1500:] if (kea_dir() / "kea.out").exists() else ""
        raise GpudcError(f"lab: kea-dhcp4 did not start: {tail}")
    return pid


def leases(lab: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """node -> its DHCP lease as Kea recorded it (address, MAC) and the leaves whose relays carried
    Kea's replies to it (their dhcrelay logs)."""
    fabric = lab.get("fabric")
    if not fabric:
        return {}
    by_mac: dict[str, dict[str, Any]] = {}
    lease_file = kea_dir() / "kea-leases4.csv"
    if lease_file.exists():
        with lease_file.open() as fh:
            for row in csv.DictReader(fh):
                if row.get("state", "0") == "0" and row.get("hwaddr"):
                    by_mac[row["hwaddr"].lower()] = {"address": row["address"], "mac": row["hwaddr"].lower(),
                                                     "hostname": row.get("hostname", "")}
    relays: dict[str, set[str]] = {}
    for leaf in fabric["leaves"]:
        log = work_dir() / leaf / "dhcrelay.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        for mac in _FORWARDED.findall(text):
            relays.setdefault(mac.lower(), set()).add(leaf)
    out = {}
    for node, mac in fabric["macs"].items():
        lease = by_mac.get(mac)
        out[node] = {"mac": mac, "address": lease["address"] if lease else None,
                     "relayed_by": sorted(relays.get(mac, set())), "port": fabric["ports"].get(node)}
    return out


def relays(lab: dict[str, Any]) -> dict[str, bool]:
    """boot leaf -> whether its dhcrelay runs."""
    fabric = lab.get("fabric") or {}
    pids = fabric.get("pids", {})
    return {leaf: services.alive(pids.get(f"{leaf}/dhcrelay"), "dhcrelay") for leaf in fabric.get("leaves", [])}


def summary(lab: dict[str, Any]) -> dict[str, Any] | None:
    """The boot network part of `lab status`: switches, relays and each host's lease (no FRR query)."""
    fabric = lab.get("fabric")
    if not fabric:
        return None
    return {"switches": fabric["switches"], "leaves": fabric["leaves"], "vrf": fabric["vrf"],
            "boot_servers": fabric["boot_servers"], "giaddr": fabric["giaddr"], "relays": relays(lab),
            "leases": leases(lab)}


def bgp_sessions(lab: dict[str, Any]) -> dict[str, dict[str, str]]:
    """switch -> {fabric port: BGP state}, asked of each switch's FRR (`show bgp summary json`)."""
    fabric = lab.get("fabric")
    if not fabric:
        return {}
    out: dict[str, dict[str, str]] = {}
    for switch in fabric["switches"]:
        data = vtysh_json(switch, "show bgp summary json")
        peers = data.get("ipv4Unicast", {}).get("peers", {}) if isinstance(data, dict) else {}
        out[switch] = {name: str(p.get("state")) for name, p in peers.items()}
    return out


def vtysh_json(switch: str, command: str) -> Any:
    """One vtysh command (ending in `json`) on a lab switch's FRR; {} when it does not answer."""
    result = subprocess.run(
        ["ip", "netns", "exec", net.netns_name(switch), "vtysh", "--vty_socket", str(frr_dir() / switch),
         "-c", command], capture_output=True, text=True, timeout=15, check=False)
    try:
        return json.loads(result.stdout or "{}")
    except ValueError:
        return {}
