"""What the templates see: the plan, plus the few site values the plan does not carry.

The plan is the source of every device, address, port and cable. A handful of values that
only matter to rendered files (DNS domain, VLAN ids, fabric MTU, Slurm names, BMC MACs) live
in the site model and not in the plan; `SiteExtras` carries them, read from the `Site` when
the caller has it and otherwise set to the documented defaults. Nothing here re-derives a
value the plan holds; it only indexes and groups the plan for the templates.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from gpudc.model.site import NETWORK_NAMES, Site, SlurmSpec
from gpudc.plan.types import Cable, Nic, Node, Plan, Switch

#: Networks the site's DHCP server answers on: node BMCs (oob) and node boot NICs (inband).
DHCP_NETWORKS = ("oob", "inband")


@dataclass(frozen=True, slots=True)
class SiteExtras:
    domain: str
    vlans: dict[str, int | None] = field(default_factory=dict)
    mtu: dict[str, int] = field(default_factory=dict)
    bmc_macs: dict[str, str] = field(default_factory=dict)
    slurm_cluster: str | None = None
    slurm_controller: str | None = None
    partitions: dict[str, str] = field(default_factory=dict)  # pool -> Slurm partition
    slurm: SlurmSpec | None = None  # the site's Slurm settings (version, controller address, ...)


def extras_from_site(plan: Plan, site: Site | None) -> SiteExtras:
    """The render-only values of a site; defaults when no Site is given."""
    if site is None:
        return SiteExtras(domain=f"{plan.site.name}.gpudc.internal")
    vlans: dict[str, int | None] = {}
    for name in NETWORK_NAMES:
        spec = getattr(site.networks, name)
        if spec is not None:
            vlans[name] = spec.vlan
    mtu: dict[str, int] = {}
    for name in ("frontend", "storage", "inband"):
        spec = getattr(site.fabrics, name)
        if spec is not None:
            mtu[name] = spec.mtu
    slurm = site.slurm if site.slurm and site.slurm.enabled else None
    return SiteExtras(
        domain=site.site.domain or f"{site.site.name}.gpudc.internal",
        vlans=vlans,
        mtu=mtu,
        bmc_macs={name: m.bmc for name, m in sorted(site.macs.items()) if m.bmc},
        slurm_cluster=slurm.cluster_name if slurm else None,
        slurm_controller=slurm.controller if slurm else None,
        partitions={p.name: p.slurm_partition for p in site.pools if p.slurm_partition},
        slurm=slurm,
    )


def node_nics(node: Node) -> list[Nic]:
    """A node's NICs, one per (network, name): the plan may list the in-band NIC twice
    (its address, then its switch port); merge the two into one."""
    merged: dict[tuple[str, str], Nic] = {}
    for nic in node.nics:
        key = (nic.network, nic.name)
        have = merged.get(key)
        if have is None:
            merged[key] = Nic(nic.name, nic.network, nic.rail, nic.rate_gbps, nic.address, nic.mac,
                              nic.switch, nic.switch_port)
            continue
        have.rail = have.rail if have.rail is not None else nic.rail
        have.rate_gbps = have.rate_gbps or nic.rate_gbps
        have.address = have.address or nic.address
        have.mac = have.mac or nic.mac
        have.switch = have.switch or nic.switch
        have.switch_port = have.switch_port or nic.switch_port
    return list(merged.values())


def dns_label(name: str) -> str:
    """A NIC name as a DNS label (mlx5_0 -> mlx5-0)."""
    return name.replace("_", "-").replace("/", "-").lower()


@dataclass(frozen=True, slots=True)
class Record:
    name: str  # relative owner name (a label path under the site domain)
    address: str
    kind: str  # node | bmc | nic | switch | device | device-bmc | loopback | boot-server
    network: str


def address_records(plan: Plan) -> list[Record]:
    """Every address of the plan as a name, in plan order (nodes, devices, switches)."""
    records: list[Record] = []
    for node in plan.nodes:
        records.append(Record(node.name, node.addresses["inband"], "node", "inband"))
        records.append(Record(f"{node.name}-bmc", node.bmc_address, "bmc", "oob"))
        for nic in node_nics(node):
            if nic.address is None or nic.network == "inband":
                continue
            records.append(Record(f"{node.name}-{dns_label(nic.name)}", nic.address, "nic", nic.network))
    for dev in plan.devices:
        if dev.address:
            records.append(Record(dev.name, dev.address, "device", "oob"))
        if dev.bmc_address:
            records.append(Record(f"{dev.name}-bmc", dev.bmc_address, "device-bmc", "oob"))
    for sw in plan.switches:
        if sw.address:
            records.append(Record(sw.name, sw.address, "switch", "oob"))
        if sw.loopback:
            records.append(Record(f"{sw.name}-lo", sw.loopback, "loopback", "loopback"))
    for i, address in enumerate(plan.boot_servers, start=1):
        records.append(Record(f"boot-{i:02d}", address, "boot-server", "inband"))
    return records


def gateway(prefix: str) -> str:
    """The first host of a prefix: the gateway address the model's `reserve` keeps free."""
    return str(ipaddress.IPv4Network(prefix).network_address + 1)


def reverse_zones(prefixes: list[str]) -> list[str]:
    """The /24 reverse zones (x.y.z.in-addr.arpa) covering prefixes, sorted numerically."""
    seen: dict[tuple[int, ...], str] = {}
    for prefix in prefixes:
        net = ipaddress.IPv4Network(prefix)
        subnets = [net.supernet(new_prefix=24)] if net.prefixlen > 24 else list(net.subnets(new_prefix=24))
        for sub in subnets:
            a, b, c, _ = str(sub.network_address).split(".")
            seen[(int(a), int(b), int(c))] = f"{c}.{b}.{a}.in-addr.arpa"
    return [seen[k] for k in sorted(seen)]


def zone_of_address(address: str) -> str:
    a, b, c, _ = address.split(".")
    return f"{c}.{b}.{a}.in-addr.arpa"


def cables_by_fabric(plan: Plan) -> dict[str, list[Cable]]:
    out: dict[str, list[Cable]] = {}
    for cable in plan.cables:
        out.setdefault(cable.fabric, []).append(cable)
    return out


def switches_by_fabric(plan: Plan) -> dict[str, list[Switch]]:
    out: dict[str, list[Switch]] = {}
    for sw in plan.switches:
        out.setdefault(sw.fabric, []).append(sw)
    return out
