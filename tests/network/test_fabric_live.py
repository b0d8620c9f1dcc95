"""The rendered in-band fabric, running for real: one namespace per switch (gpudc.lab.fabric), the rendered
frr.conf in real zebra + bgpd, the rendered kea-dhcp4.conf in the real kea-dhcp4 behind a routed port,
isc-dhcp-relay's dhcrelay on the boot leaves, and dhclient on a host behind leaf02.

A small site of its own: the lab site with its networks in 10.213.251.0/24 (never the lab's use of
10.213.0.0/16), an in-band fabric of sn4600c leaves of 2 node ports each (2 leaves, 1 spine), and boot
MACs for Kea's reservations. Namespaces are gpudc-t-*; every one is deleted and every process ended by
its PID at teardown, also on failure."""

from __future__ import annotations

import ipaddress
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gpudc.catalog import load_catalog
from gpudc.lab.fabric import FabricLab, frr_available, kernel_features
from gpudc.model import load_site
from gpudc.model.site import EthernetFabricSpec, MacsSpec, NetworkSpec, NetworksSpec, Site
from gpudc.plan import expand
from gpudc.plan.types import Plan
from gpudc.render import render_site
from gpudc.render.checks import kea_json

from .conftest import needs_root_netns

KEA = shutil.which("kea-dhcp4") or "/usr/sbin/kea-dhcp4"
MACS = {"h200-01": "02:00:00:00:fb:01", "h200-02": "02:00:00:00:fb:02",
        "gb200-01": "02:00:00:00:fb:03", "gb200-02": "02:00:00:00:fb:04"}
LEAF1, LEAF2, SPINE = "inband-leaf01", "inband-leaf02", "inband-spine01"
T = TypeVar("T")


def _features() -> dict[str, bool]:
    return kernel_features() if os.geteuid() == 0 and shutil.which("ip") else {}


FEATURES = _features()
pytestmark = [
    needs_root_netns,
    pytest.mark.skipif(not frr_available(), reason="FRR (zebra, bgpd, vtysh) not installed"),
    pytest.mark.skipif(not Path(KEA).exists(), reason="kea-dhcp4 not installed"),
    pytest.mark.skipif(shutil.which("dhcrelay") is None or shutil.which("dhclient") is None,
                       reason="isc-dhcp-relay / isc-dhcp-client not installed"),
    pytest.mark.skipif(not all(FEATURES.get(k) for k in ("vxlan", "bridge", "macvlan")),
                       reason=f"kernel lacks VXLAN, bridge or macvlan devices: {FEATURES}"),
]


def _site() -> Site:
    site, _ = load_site("lab")
    networks = NetworksSpec(inband=NetworkSpec(prefixes=["10.213.251.0/25"]),
                            oob=NetworkSpec(prefixes=["10.213.251.128/26"]),
                            loopback=NetworkSpec(prefixes=["10.213.251.192/28"], reserve=0))
    # single-homed: two nodes on each of two leaves (the dual-homed lab runs in tests/lab/test_boot_network.py)
    inband = EthernetFabricSpec(leaf="sn4600c", spine="sn4600c", rate_gbps=100, downlinks=2, homing="single")
    return site.model_copy(update={"networks": networks, "fabrics": site.fabrics.model_copy(update={"inband": inband}),
                                   "macs": {n: MacsSpec(boot=m) for n, m in MACS.items()}})


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FabricLab, Plan, Path]]:
    tmp = tmp_path_factory.mktemp("fabric")
    old = os.environ.get("GPUDC_SECRET_DIR")
    os.environ["GPUDC_SECRET_DIR"] = str(tmp / "secrets")
    try:
        site = _site()
        plan = expand(site, load_catalog(), stack="lab")
        render_site(plan, tmp / "tree", site)
    finally:
        if old is None:
            os.environ.pop("GPUDC_SECRET_DIR", None)
        else:
            os.environ["GPUDC_SECRET_DIR"] = old
    lab = FabricLab(plan, tmp / "tree", tmp / "work")
    try:
        # With VRF devices the boot server sits on leaf01 and leaf02's relayed DHCP crosses the
        # fabric (EVPN type-5 in the VRF); without them (some VM kernels) the tenant network is in the
        # default table and the boot server on leaf02, the leaf under test.
        lab.up(boot_leaf=LEAF1 if lab.vrf else LEAF2)
        lab.wait_established(timeout=20)
        log = lab.kea(kea_json(tmp / "tree" / "dhcp" / "kea-dhcp4.conf"), KEA)
        for leaf in plan.segments[0].leaves:
            lab.relay_start(leaf)
        yield lab, plan, log
    finally:
        lab.down()


def _poll(check: Callable[[], T], timeout: float = 10.0) -> T:
    """The first truthy value of check(), or its last value after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > end:
            return value
        time.sleep(0.25)


def _loopback(plan: Plan, name: str) -> str:
    return next(str(s.loopback) for s in plan.switches if s.name == name)


def test_every_fabric_session_is_established(fabric: tuple[FabricLab, Plan, Path]) -> None:
    lab, _, _ = fabric
    summary = {sw: lab.vtysh_json(sw, "show bgp summary json") for sw in (LEAF1, LEAF2, SPINE)}
    for sw, data in summary.items():
        for afi in ("ipv4Unicast", "l2VpnEvpn"):
            peers = data[afi]["peers"]
            assert peers and all(p["state"] == "Established" for p in peers.values()), (sw, afi, peers)
    assert set(summary[SPINE]["ipv4Unicast"]["peers"]) == {"swp1", "swp2", "swp3", "swp4"}  # 2 uplinks per leaf
    assert set(summary[LEAF2]["ipv4Unicast"]["peers"]) == {"swp3", "swp4"}  # after its 2 node ports


def test_each_leaf_routes_to_the_other_leafs_loopback(fabric: tuple[FabricLab, Plan, Path]) -> None:
    lab, plan, _ = fabric
    for here, there in ((LEAF1, LEAF2), (LEAF2, LEAF1)):
        prefix = f"{_loopback(plan, there)}/32"
        # ECMP over both uplinks (BGP unnumbered, via the spine): the second path can land a moment
        # after the first, so wait (bounded) for the route with both next hops
        def both(h: str = here, p: str = prefix) -> Any:
            found = lab.vtysh_json(h, f"show ip route {p} json").get(p)
            return found if found and len(found[0].get("nexthops", [])) == 2 else None

        routes = _poll(both) or lab.vtysh_json(here, f"show ip route {prefix} json").get(prefix)
        assert routes and routes[0]["protocol"] == "bgp" and routes[0]["selected"], (here, prefix, routes)
        assert len(routes[0]["nexthops"]) == 2, routes


def test_evpn_carries_the_l2_vni_to_the_remote_vtep(fabric: tuple[FabricLab, Plan, Path]) -> None:
    lab, plan, _ = fabric
    seg = plan.segments[0]
    for here, there in ((LEAF1, LEAF2), (LEAF2, LEAF1)):
        def l2vni(h: str = here) -> dict[str, Any]:
            vni: dict[str, Any] = lab.vtysh_json(h, "show evpn vni json").get(str(seg.vni), {})
            return vni if vni.get("remoteVteps") else {}

        l2 = _poll(l2vni)
        assert l2["type"] == "L2" and l2["vxlanIf"] == f"vni{seg.vni}" and l2["remoteVteps"] == [_loopback(plan, there)]
        assert l2["tenantVrf"] == (seg.vrf if lab.vrf else "default")
        routes = lab.vtysh_json(here, "show bgp l2vpn evpn route type multicast json")
        imet = [k for rd in routes.values() if isinstance(rd, dict) for k in rd if isinstance(k, str)]
        assert f"[3]:[0]:[32]:[{_loopback(plan, there)}]" in imet
    if lab.vrf:  # symmetric routing: the L3 VNI of the VRF is up on every leaf
        assert lab.vtysh_json(LEAF1, "show evpn vni json")[str(seg.l3vni)]["type"] == "L3"


def test_a_host_on_leaf02_boots_by_dhcp_through_its_relay_only(fabric: tuple[FabricLab, Plan, Path]) -> None:
    lab, plan, log = fabric
    node = next(n for n in plan.nodes if any(x.switch == LEAF2 for x in n.nics))
    giaddr = next(s.svi["inband"][0] for s in plan.switches if s.name == LEAF2)
    lab.attach(node.name)
    assert lab.dhcp(node.name, timeout=8) == node.addresses["inband"]
    text = log.read_text()
    # Kea picked the in-band subnet by the relay's giaddr (leaf02's own SVI address) and answered it
    assert f"selected subnet {plan.segments[0].prefixes[0]} for packet received by matching address {giaddr}" in text
    assert f"remote_address={giaddr}:67, msg_type=DHCPACK" in text
    assert f"lease {node.addresses['inband']} has been allocated" in text
    assert ipaddress.IPv4Address(giaddr) in ipaddress.IPv4Network(plan.segments[0].prefixes[0])
    # The boot server is on a routed port: without leaf02's relay the host's broadcasts reach no Kea.
    # (With VRF devices, leaf01's relay would also hear them, flooded over the L2 VNI: stop it too.)
    lab.relay_stop(LEAF2)
    if lab.vrf:
        lab.relay_stop(LEAF1)
    other = next(n for n in plan.nodes if n.name != node.name and any(x.switch == LEAF2 for x in n.nics))
    lab.attach(other.name)
    before = log.read_text().count("DHCP4_LEASE_ALLOC")
    assert lab.dhcp(other.name, timeout=4) is None
    assert log.read_text().count("DHCP4_LEASE_ALLOC") == before
