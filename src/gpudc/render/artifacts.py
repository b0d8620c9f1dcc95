"""The renderers: plan (+ SiteExtras) -> files, one function per kind of artifact.

Every function reads the plan through `Ctx`, renders templates from `templates/` and
writes through the `Writer`. Python here only groups and indexes plan data; formats live
in the templates.
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment

from gpudc import secrets
from gpudc.boot import tokens
from gpudc.catalog import network_conventions
from gpudc.plan.addresses import network_of
from gpudc.plan.expand import BOOT_NETWORK
from gpudc.plan.types import HOST_BOND, BootFirmware, Cable, Device, Fabric, Node, Plan, Segment, Switch
from gpudc.render.context import (
    DHCP_NETWORKS,
    Record,
    SiteExtras,
    address_records,
    gateway,
    node_nics,
    reverse_zones,
    zone_of_address,
)
from gpudc.render.env import environment
from gpudc.render.writer import Writer

#: Fabric kinds whose switches run Cumulus (NVUE): Ethernet fabrics and RoCE compute fabrics.
ETHERNET_KINDS = ("ethernet", "roce")
#: Parallel ssh-keygen runs when a render has to make host keys.
KEYGEN_WORKERS = 8
#: Kea client classes that a node's boot reservation puts it in: every node, and the node itself.
NODE_CLASS = "gpudc-node"
#: Kea client class of one node's iPXE client: it gets the URL of the node's own script (seed token).
NODE_IPXE_CLASS = "gpudc-ipxe"


def boot_base_url(plan: Plan, service_address: str | None = None, scheme: str = "http") -> str:
    """Where the boot server serves this site's tree (iPXE scripts, seeds): http://<boot server>/gpudc/<site>
    (https: the seed server with the site CA's certificate, for clients that trust it)."""
    address = service_address or (plan.boot_servers[0] if plan.boot_servers else "")
    return f"{scheme}://{address}{tokens.site_path(plan.site.name)}"


@dataclass(slots=True)
class Ctx:
    plan: Plan
    extras: SiteExtras
    env: Environment
    nodes: dict[str, Node] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    switches: dict[str, Switch] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    service_address: str = ""
    cable_index: dict[str, list[Cable]] = field(default_factory=dict)

    @classmethod
    def build(cls, plan: Plan, extras: SiteExtras) -> Ctx:
        inband = next(p for p in plan.pools if p.network == "inband")
        index: dict[str, list[Cable]] = {}
        for cable in plan.cables:
            index.setdefault(cable.a_device, []).append(cable)
            index.setdefault(cable.b_device, []).append(cable)
        return cls(
            plan, extras, environment(),
            nodes={n.name: n for n in plan.nodes},
            devices={d.name: d for d in plan.devices},
            switches={s.name: s for s in plan.switches},
            records=address_records(plan),
            # the boot/DNS/HTTP server has its own planned address (never the in-band gateway)
            service_address=plan.boot_servers[0] if plan.boot_servers else gateway(inband.prefixes[0]),
            cable_index=index,
        )

    @property
    def boot_base(self) -> str:
        return boot_base_url(self.plan, self.service_address)

    def render(self, template: str, **values: Any) -> str:
        return self.env.get_template(template).render(
            site=self.plan.site, extras=self.extras, domain=self.extras.domain,
            service_address=self.service_address, **values,
        )

    def where(self, device: str) -> tuple[str, int | None]:
        """(rack, U) of any device name; ('', None) where the plan places it in no rack."""
        if device in self.nodes:
            n = self.nodes[device]
            return n.rack, n.u
        if device in self.devices:
            d = self.devices[device]
            return d.rack or "", d.u
        if device in self.switches:
            return self.switches[device].rack or "", None
        return "", None


# --------------------------------------------------------------------------- names, DNS


def render_hosts(ctx: Ctx, w: Writer) -> None:
    w.write("hosts/hosts", ctx.render("hosts/hosts.j2", records=ctx.records), "hosts",
            "/etc/hosts fragment: every address of the plan")


def _serial(lines: Iterable[str]) -> int:
    """A deterministic SOA serial: a content checksum (1..2^31-1), so an unchanged site keeps it."""
    return zlib.crc32("\n".join(lines).encode()) % 2_147_483_646 + 1


def render_dns(ctx: Ctx, w: Writer) -> None:
    domain = ctx.extras.domain
    records = ctx.records
    serial = _serial(f"{r.name} {r.address}" for r in records)
    w.write(f"dns/db.{domain}", ctx.render("dns/forward.zone.j2", records=records, serial=serial,
                                           ns_address=ctx.service_address),
            "dns", f"forward zone {domain} ({len(records)} A records)")
    prefixes = [p for pool in ctx.plan.pools for p in pool.prefixes]
    by_zone: dict[str, list[Record]] = {z: [] for z in reverse_zones(prefixes)}
    for r in records:
        by_zone.setdefault(zone_of_address(r.address), []).append(r)
    for zone, zone_records in by_zone.items():
        zone_records = sorted(zone_records, key=lambda r: int(r.address.rsplit(".", 1)[1]))
        w.write(f"dns/db.{zone}", ctx.render("dns/reverse.zone.j2", zone=zone, records=zone_records,
                                             serial=_serial(f"{r.name} {r.address}" for r in zone_records)),
                "dns", f"reverse zone {zone} ({len(zone_records)} PTR records)")
    w.write("dns/named.conf.gpudc", ctx.render("dns/named.conf.j2", zones=[domain, *by_zone]),
            "dns", "BIND zone statements for the zones above")


# --------------------------------------------------------------------------- DHCP and boot


def render_dhcp(ctx: Ctx, w: Writer) -> None:
    plan = ctx.plan
    subnets: list[dict[str, Any]] = []
    by_prefix: dict[str, list[dict[str, Any]]] = {}
    prefix_net: dict[str, tuple[str, ipaddress.IPv4Network]] = {}
    for pool in plan.pools:
        if pool.network not in DHCP_NETWORKS:
            continue
        for prefix in pool.prefixes:
            by_prefix[prefix] = []
            prefix_net[prefix] = (pool.network, ipaddress.IPv4Network(prefix))

    def subnet_of(address: str) -> str:
        ip = ipaddress.IPv4Address(address)
        for prefix, (_, net) in prefix_net.items():
            if ip in net:
                return prefix
        raise ValueError(f"{address} is in no DHCP network")  # the plan allocates from these pools

    for node in plan.nodes:
        bmc_mac = ctx.extras.bmc_macs.get(node.name)
        res: dict[str, Any] = {"ip-address": node.bmc_address, "hostname": f"{node.name}-bmc"}
        if bmc_mac:
            res["hw-address"] = bmc_mac
        else:
            res["flex-id"] = f"'{node.name}-bmc'"
            w.placeholders.append(f"dhcp: {node.name}-bmc ({node.bmc_address}) has no MAC; flex-id placeholder "
                                  f"'{node.name}-bmc' (set gpudc:macs.{node.name}.bmc)")
        by_prefix[subnet_of(node.bmc_address)].append(res)
        boot: dict[str, Any] = {"ip-address": node.addresses["inband"], "hostname": node.name}
        if node.boot_mac:
            boot["hw-address"] = node.boot_mac
        else:
            boot["flex-id"] = f"'{node.name}'"
            w.placeholders.append(f"dhcp: {node.name} boot NIC ({node.addresses['inband']}) has no MAC; flex-id "
                                  f"placeholder '{node.name}' (set gpudc:macs.{node.name}.boot)")
        # the reservation marks the node: its iPXE client then gets its own script (per-node class below)
        boot["client-classes"] = [NODE_CLASS, f"{NODE_CLASS}-{node.name}"]
        by_prefix[subnet_of(node.addresses["inband"])].append(boot)
    others = [(a, h) for dev in plan.devices for a, h in ((dev.address, dev.name), (dev.bmc_address, f"{dev.name}-bmc"))]
    others += [(sw.address, sw.name) for sw in plan.switches]  # management ports: ZTP over DHCP
    for address, host in others:
        if address:
            by_prefix[subnet_of(address)].append({"ip-address": address, "hostname": host, "flex-id": f"'{host}'"})
            w.placeholders.append(f"dhcp: {host} ({address}) has no MAC; flex-id placeholder '{host}'")
    for sid, (prefix, reservations) in enumerate(by_prefix.items(), start=1):
        network, _ = prefix_net[prefix]
        subnets.append({"id": sid, "subnet": prefix, "network": network, "router": gateway(prefix),
                        "reservations": sorted(reservations, key=lambda r: ipaddress.IPv4Address(r["ip-address"]))})
    # One client class per UEFI client type (option 93) of every CPU architecture the site boots:
    # PXE firmware gets the iPXE binary over TFTP, HTTP Boot firmware its URL (the plan's boot facts).
    base = ctx.boot_base
    classes: dict[int, dict[str, Any]] = {}
    for node in plan.nodes:
        nb = node.boot
        for fw in nb.firmware or [BootFirmware(f"uefi-{nb.arch}", nb.uefi_client_arch, "tftp")]:
            file = f"{base}/ipxe/{nb.ipxe}" if fw.method == "http" else nb.ipxe
            classes.setdefault(fw.client_arch, {"name": fw.name, "code": fw.client_arch, "arch": nb.arch,
                                                "method": fw.method, "file": file})
    firmware = [classes[k] for k in sorted(classes)]
    seeds = tokens.node_tokens(plan)
    node_boot = [{"name": n.name, "marker": f"{NODE_CLASS}-{n.name}", "class": f"{NODE_IPXE_CLASS}-{n.name}",
                  "file": f"{base}/{tokens.seed_path(seeds[n.name])}node.ipxe"} for n in plan.nodes]
    text = ctx.render("dhcp/kea-dhcp4.conf.j2", subnets=subnets, firmware=firmware, node_boot=node_boot,
                      node_class=NODE_CLASS, boot_url=f"{base}/pxe/boot.ipxe")
    count = sum(len(s["reservations"]) for s in subnets)
    w.write("dhcp/kea-dhcp4.conf", text, "dhcp", f"Kea DHCPv4: {len(subnets)} subnets, {count} reservations; "
            "hands each node's iPXE the URL of its own script (holds every node's seed token: mode 0600)",
            secret=True)


def _pools(plan: Plan) -> dict[str, list[Node]]:
    pools: dict[str, list[Node]] = {}
    for node in plan.nodes:
        pools.setdefault(node.pool, []).append(node)
    return pools


def _node_info(node: Node) -> dict[str, Any]:
    """What a node knows of itself (/etc/gpudc/node.json): its place, addresses and NICs."""
    return {
        "site": node.site, "node": node.name, "pool": node.pool, "sku": node.sku, "profile": node.profile,
        "rack": node.rack, "u": node.u, "bmc": node.bmc_address, "addresses": node.addresses,
        "nvlink_domain": node.nvlink_domain,
        "nics": [{"name": n.name, "network": n.network, "address": n.address, "rail": n.rail,
                  "switch": n.switch, "switch_port": n.switch_port} for n in node_nics(node)],
    }


def node_network(plan: Plan, node: Node) -> tuple[dict[str, Any], list[str]]:
    """The node's in-band network as netplan v2 (autoinstall's `network`), and what it lacks. Single-homed:
    the boot port by its MAC with DHCP. Dual-homed: an LACP bond of its two in-band ports (catalog host_bond)
    that takes the boot MAC, so Kea's reservation holds from PXE to the installed OS; a port with no known
    MAC is left out and named. Networks converged onto the in-band fabric: VLANs on that link, planned address."""
    ports = sorted((n for n in node.nics if n.network == BOOT_NETWORK and n.switch), key=lambda n: n.name)
    missing: list[str] = []
    ethernets: dict[str, Any] = {}
    doc: dict[str, Any] = {"version": 2, "ethernets": ethernets}
    if node.homing == "dual" and node.boot_mac:
        for nic in ports:
            if nic.mac:
                ethernets[nic.name] = {"match": {"macaddress": nic.mac}, "set-name": nic.name}
            else:
                missing.append(f"{nic.name} (port {nic.switch}:{nic.switch_port})")
        bond = network_conventions()["host_bond"]
        doc["bonds"] = {HOST_BOND: {
            "interfaces": sorted(ethernets), "macaddress": node.boot_mac, "dhcp4": True,
            "parameters": {"mode": bond["mode"], "lacp-rate": bond["lacp_rate"],
                           "transmit-hash-policy": bond["transmit_hash_policy"],
                           "mii-monitor-interval": bond["mii_monitor_interval"]},
        }}
        link = HOST_BOND
    else:  # single-homed, or dual-homed with no MAC known: DHCP on the first matching port, as PXE did
        ethernets["inband0"] = {"match": {"macaddress": node.boot_mac} if node.boot_mac else {"name": "en*"},
                                "dhcp4": True}
        link = "inband0"
        if node.homing == "dual":
            missing += [f"{nic.name} (port {nic.switch}:{nic.switch_port})" for nic in ports]
    vlans: dict[str, Any] = {}
    for seg in plan.segments:
        address = node.addresses.get(seg.network)
        held = network_of(plan, address) if address else None
        if seg.fabric != BOOT_NETWORK or seg.network == BOOT_NETWORK or held is None:
            continue
        length = ipaddress.IPv4Network(held[1]).prefixlen
        vlans[f"{link}.{seg.vlan}"] = {"id": seg.vlan, "link": link, "addresses": [f"{address}/{length}"]}
    if vlans:
        doc["vlans"] = vlans
    return doc, missing


def render_pxe(ctx: Ctx, w: Writer) -> None:
    plan = ctx.plan
    base = ctx.boot_base
    pools = _pools(plan)
    w.write("pxe/boot.ipxe", ctx.render("pxe/boot.ipxe.j2", pools=pools, base=base), "pxe",
            "shared iPXE script: what an iPXE client without a node reservation gets (installs nothing)")
    for pool, nodes in pools.items():
        first = nodes[0]  # a pool is one SKU on one OS: one boot for all its nodes
        boot = first.boot
        w.write(f"pxe/{pool}.ipxe", ctx.render("pxe/pool.ipxe.j2", pool=pool, node=first, boot=boot, base=base),
                "pxe", f"iPXE script of pool {pool} ({boot.label}, {boot.arch}); a node's own script chains it")
        if boot.installer == "preseed":
            mirror = urlsplit(boot.mirror or "")
            w.write(f"pxe/{pool}.preseed.cfg",
                    ctx.render("pxe/preseed.cfg.j2", pool=pool, base=base, boot=boot,
                               mirror_host=mirror.netloc, mirror_dir=mirror.path or "/"),
                    "pxe", f"debian-installer preseed of pool {pool} ({boot.label}): installs, then seeds "
                    "cloud-init (NoCloud)")
    _, controller_pub = secrets.controller_key(plan.site.name)
    # Keys are made once per node (ssh-keygen); a first render of a big site makes thousands,
    # so they are fetched in parallel. Later renders only read them.
    with ThreadPoolExecutor(max_workers=KEYGEN_WORKERS) as executor:
        keys = list(executor.map(lambda n: secrets.host_key(plan.site.name, n.name), plan.nodes))
    seeds = tokens.node_tokens(plan)
    for node, (private, public) in zip(plan.nodes, keys, strict=True):
        w.write(f"pxe/nodes/{node.name}/node.ipxe",
                ctx.render("pxe/node.ipxe.j2", node=node, base=base,
                           seed=f"{base}/{tokens.seed_path(seeds[node.name])}"),
                "pxe", f"iPXE script of {node.name}: its seed URL, then its pool's script (holds its seed token: "
                "mode 0600; served at <base>/seed/<token>/node.ipxe)", secret=True)
        network, missing = node_network(plan, node)
        for port in missing:
            w.placeholders.append(f"pxe: {node.name} {HOST_BOND} lacks in-band port {port}: its MAC is unknown "
                                  f"(set gpudc:macs.{node.name}.inband; until then DHCP on the boot port alone)")
        text = ctx.render(
            "pxe/user-data.j2", node=node, node_info=_node_info(node), network=network,
            boot=node.boot, controller_key=controller_pub,
            host_private=private.read_text(), host_public=public,
        )
        w.write(f"pxe/nodes/{node.name}/user-data", text, "pxe",
                f"cloud-init user-data of {node.name} (holds its private SSH host key: mode 0600)", secret=True)
        w.write(f"pxe/nodes/{node.name}/meta-data", ctx.render("pxe/meta-data.j2", node=node), "pxe",
                f"NoCloud meta-data of {node.name}")


# --------------------------------------------------------------------------- switches


def _fabric_rate(plan: Plan, fabric: str) -> int:
    for f in plan.fabrics:
        if f.name == fabric:
            return f.rate_gbps
    return 0


def breakout_factor(switch: Switch, fabric_rate: int) -> int:
    """Logical ports per cage: a 800G cage running 2x400G, or 1 where rates match."""
    if fabric_rate and switch.port_rate_gbps > fabric_rate and switch.port_rate_gbps % fabric_rate == 0:
        k = switch.port_rate_gbps // fabric_rate
        if k in (2, 4, 8):
            return k
    return 1


def cumulus_port(port: str, factor: int) -> str:
    """The Cumulus interface of a plan port number: swpN, or swpNsM on a broken-out cage."""
    n = int(port)
    if factor == 1:
        return f"swp{n}"
    return f"swp{(n - 1) // factor + 1}s{(n - 1) % factor}"


def switch_ports(ctx: Ctx, switch: Switch) -> list[dict[str, Any]]:
    """Every cabled port of a switch: its Cumulus name, far end and role (host / fabric)."""
    factor = breakout_factor(switch, _fabric_rate(ctx.plan, switch.fabric))
    ports: list[dict[str, Any]] = []
    for cable in _cables_of(ctx, switch.name):
        if cable.a_device == switch.name:
            local, far, far_port = cable.a_port, cable.b_device, cable.b_port
        else:
            local, far, far_port = cable.b_port, cable.a_device, cable.a_port
        role = "fabric" if far in ctx.switches else "host"
        ports.append({"port": local, "ifname": cumulus_port(local, factor), "far": far, "far_port": far_port,
                      "role": role, "media": cable.media, "cage": (int(local) - 1) // factor + 1})
    ports.sort(key=lambda p: int(str(p["port"])))
    return ports


def _cables_of(ctx: Ctx, device: str) -> list[Cable]:
    return ctx.cable_index.get(device, [])


def nvue_switches(plan: Plan) -> list[Switch]:
    """The Ethernet switches that get an NVUE startup.yaml (leaves and spines; RoCE compute)."""
    kinds = {f.name: f.kind for f in plan.fabrics}
    return [s for s in plan.switches if s.fabric != "oob" and kinds.get(s.fabric) in ETHERNET_KINDS]


def leaf_segments(plan: Plan, switch: Switch) -> list[Segment]:
    """The EVPN segments a leaf carries: its fabric's own network first (the untagged/access VLAN of
    its host ports), then any network converged onto it (storage on a converged in-band fabric)."""
    if switch.role != "leaf":
        return []
    segs = [s for s in plan.segments if s.fabric == switch.fabric]
    return sorted(segs, key=lambda s: s.network != switch.fabric)


def host_interfaces(ctx: Ctx, switch: Switch, ports: list[dict[str, Any]],
                    segments: list[Segment]) -> list[dict[str, Any]]:
    """The bridge ports of a leaf: a host port as it is, or, for a dual-homed node, the EVPN multihoming
    bond over it (bond<port>: the same name and local ES id on both leaves of the pair, the pair's ES
    system MAC). VLANs: the fabric's own network untagged, converged networks tagged."""
    out: list[dict[str, Any]] = []
    for p in ports:
        if p["role"] != "host":
            continue
        node = ctx.nodes.get(p["far"])
        tagged = [s.vlan for s in segments[1:]] if node is not None else []
        iface: dict[str, Any] = {"name": p["ifname"], "members": [], "description": f"{p['far']}:{p['far_port']}",
                                 "vlan": segments[0].vlan if segments else None, "tagged": tagged, "es": None}
        if node is not None and node.homing == "dual" and switch.es_sys_mac:
            local_id = int(p["port"])
            iface.update(name=f"bond{local_id}", members=[p["ifname"]],
                         description=f"{node.name} {HOST_BOND} {p['far_port']}",
                         es={"local_id": local_id, "mac": switch.es_sys_mac})
        out.append(iface)
    return out


def render_switches(ctx: Ctx, w: Writer) -> None:
    plan = ctx.plan
    oob = next(p for p in plan.pools if p.network == "oob")
    oob_len = {p: ipaddress.IPv4Network(p).prefixlen for p in oob.prefixes}
    roce = any(f.name == "compute" and f.kind in ETHERNET_KINDS for f in plan.fabrics)
    net = network_conventions()  # fabric MTU, VRR MAC: catalog data, read at render time
    for sw in nvue_switches(plan):
        ports = switch_ports(ctx, sw)
        factor = breakout_factor(sw, _fabric_rate(plan, sw.fabric))
        cages = sorted({p["cage"] for p in ports}) if factor > 1 else []
        segments = leaf_segments(plan, sw)
        # the leaf's own address per prefix of each segment, beside the anycast gateway
        svis = [{"segment": seg, "addresses": [f"{a}/{g.split('/')[1]}" for a, g in
                                               zip(sw.svi[seg.network], seg.gateways, strict=True)]}
                for seg in segments]
        hosts = host_interfaces(ctx, sw, ports, segments)
        bonds = [h for h in hosts if h["es"]]
        mgmt_prefix = next(p for p in oob.prefixes if ipaddress.IPv4Address(sw.address) in ipaddress.IPv4Network(p))
        text = ctx.render(
            "switch/startup.yaml.j2", switch=sw, ports=ports, cages=cages, breakout=f"{factor}x",
            mtu=ctx.extras.mtu.get(sw.fabric, int(net["fabric_mtu"])), segments=segments, svis=svis,
            host_of={(h["members"] or [h["name"]])[0]: h for h in hosts}, bonds=bonds, vrr_mac=net["vrr_mac"],
            mgmt=f"{sw.address}/{oob_len[mgmt_prefix]}", mgmt_gw=gateway(mgmt_prefix),
            roce=roce and sw.fabric == "compute",
        )
        relays = [s for s in segments if s.dhcp_relay]
        relay = "".join(f"; DHCP relay to {', '.join(s.dhcp_relay)}" for s in relays)
        mh = f"; {len(bonds)} EVPN multihoming bonds with {sw.es_peer}" if bonds else ""
        w.write(f"switches/{sw.name}/startup.yaml", text, "switches",
                f"NVUE startup.yaml of {sw.fabric} {sw.role} {sw.name} ({sw.model}, {len(ports)} cabled ports{relay}{mh})")
        fabric_ports = [p for p in ports if p["role"] == "fabric"]
        w.write(f"switches/{sw.name}/frr.conf",
                ctx.render("frr/frr.conf.j2", switch=sw, segments=segments, fabric_ports=fabric_ports, bonds=bonds),
                "switches", f"FRR config of {sw.name}: BGP unnumbered on {len(fabric_ports)} fabric ports"
                + (", EVPN symmetric" if segments else "") + (", EVPN multihoming" if bonds else ""))
    rows = []
    for sw in plan.switches:
        if sw.fabric != "oob":
            continue
        for cable in _cables_of(ctx, sw.name):
            dev, dev_port, port = cable.a_device, cable.a_port, cable.b_port
            address: str | None
            if dev in ctx.nodes:
                address = ctx.nodes[dev].bmc_address
            else:
                d = ctx.devices.get(dev)
                address = (d.bmc_address if dev_port == "bmc" else d.address) if d else ""
            rows.append([sw.name, sw.rack or "", port, cumulus_port(port, 1), dev, dev_port, address or ""])
    if rows:
        w.write("switches/oob-portmap.csv", ctx.render("switch/oob-portmap.csv.j2", rows=rows), "switches",
                f"OOB switch port map ({len(rows)} ports)")


# --------------------------------------------------------------------------- fabric, cabling


def ib_endpoint(ctx: Ctx, device: str, port: str) -> tuple[str, str]:
    """An InfiniBand endpoint as ibnetdiscover names it: ("host mlx5_0", "1") or ("leaf", "7")."""
    if device in ctx.nodes:
        return f"{device} {port}", "1"
    return device, port


def ib_line(a: tuple[str, str], b: tuple[str, str]) -> str:
    return f'"{a[0]}"[{a[1]}]\t"{b[0]}"[{b[1]}]'


def render_fabric(ctx: Ctx, w: Writer) -> None:
    plan = ctx.plan
    ib = next((f for f in plan.fabrics if f.name == "compute" and f.kind == "infiniband"), None)
    if ib is None:
        w.notes.append("fabric: the site has no InfiniBand compute fabric; no ibnetdiscover topology")
        return
    lines = []
    for cable in plan.cables:
        if cable.fabric != "compute":
            continue
        a = ib_endpoint(ctx, cable.a_device, cable.a_port)
        b = ib_endpoint(ctx, cable.b_device, cable.b_port)
        if cable.a_device in ctx.nodes:  # switch end first, as ibnetdiscover lists switch ports
            a, b = b, a
        node = ctx.nodes.get(cable.a_device)
        nic = next((n for n in node.nics if n.name == cable.a_port), None) if node else None
        comment = f"rail {nic.rail} su {node.su}" if node and nic else "uplink"
        lines.append({"line": ib_line(a, b), "comment": f"{comment} {cable.media} {cable.length_class}"})
    w.write("fabric/compute.topology", ctx.render("fabric/topology.j2", fabric=ib, lines=lines), "fabric",
            f"expected InfiniBand topology, one line per cable ({len(lines)}); compare with "
            "`gpudc cabling check --ibnetdiscover`")


def render_cabling(ctx: Ctx, w: Writer) -> None:
    plan = ctx.plan
    rows = []
    for c in plan.cables:
        a_rack, a_u = ctx.where(c.a_device)
        b_rack, b_u = ctx.where(c.b_device)
        rows.append([c.fabric, a_rack, a_u, c.a_device, c.a_port, b_rack, b_u, c.b_device, c.b_port,
                     c.media, c.length_class, f"{c.a_device}:{c.a_port}>{c.b_device}:{c.b_port}"])
    w.write("cabling/cables.csv", ctx.render("cabling/cables.csv.j2", rows=rows), "cabling",
            f"cabling plan: {len(rows)} cables (rack, U, port, media, length class, far end)")
    render_rack_elevations(ctx, w)


#: Fill colors of what is not a node in an elevation (nodes take their pool's color).
_KIND_COLORS = {"nvlink_switch_tray": "#7f7f7f", "power_shelf": "#c0392b", "switch": "#2c3e50"}


def render_rack_elevations(ctx: Ctx, w: Writer) -> None:
    """One SVG per populated rack: nodes, NVLink switch trays, power shelves and switches at their U."""
    plan = ctx.plan
    pools = sorted({n.pool for n in plan.nodes})
    colors = ["#4e79a7", "#59a14f", "#b07aa1", "#f28e2b", "#76b7b2", "#edc948", "#ff9da7", "#9c755f"]
    pool_color = {p: colors[i % len(colors)] for i, p in enumerate(pools)}
    for rack in plan.racks:
        if not rack.nodes and not rack.devices and not rack.switches:
            continue
        units: list[dict[str, Any]] = []
        unplaced: list[str] = []
        for name in rack.nodes:
            n = ctx.nodes[name]
            units.append({"name": n.name, "u": n.u, "height": n.height_u, "kind": "node",
                          "label": f"{n.name} · {n.sku} · {n.expected.gpu_count}x GPU · {n.power_kw:g} kW",
                          "detail": f"in-band {n.addresses['inband']} · BMC {n.bmc_address}",
                          "color": pool_color[n.pool]})
        for name in rack.devices:
            d = ctx.devices.get(name)
            if d is not None and d.u is not None:
                units.append({"name": d.name, "u": d.u, "height": d.height_u, "kind": d.kind,
                              "label": f"{d.name} · {d.model}", "detail": f"OOB {d.address}",
                              "color": _KIND_COLORS.get(d.kind, "#7f7f7f")})
            elif name not in rack.switches:
                unplaced.append(name)
        for fx in rack.fixtures:
            units.append({"name": fx.name, "u": fx.u, "height": fx.height_u, "kind": fx.kind,
                          "label": f"{fx.name} · {fx.model}", "detail": "", "color": _KIND_COLORS[fx.kind]})
        for name in rack.switches:
            sw = ctx.switches[name]
            if sw.u is None:
                unplaced.append(name)
                continue
            units.append({"name": sw.name, "u": sw.u, "height": sw.height_u, "kind": "switch",
                          "label": f"{sw.name} · {sw.model} · {sw.role} · {sw.power_kw:g} kW",
                          "detail": f"mgmt {sw.address}", "color": _KIND_COLORS["switch"]})
        units.sort(key=lambda x: x["u"])
        w.write(f"cabling/racks/{rack.name}.svg",
                ctx.render("cabling/rack.svg.j2", rack=rack, units=units, unplaced=unplaced,
                           legend=[(p, pool_color[p]) for p in pools if any(ctx.nodes[n].pool == p for n in rack.nodes)]),
                "cabling", f"rack elevation of {rack.name} ({len(units)} placed, {rack.power_kw:g}/{rack.power_limit_kw:g} kW)")


# --------------------------------------------------------------------------- IMEX, Slurm


def render_imex(ctx: Ctx, w: Writer) -> None:
    for domain in ctx.plan.nvlink_domains:
        w.write(f"imex/{domain.name}/nodes_config.cfg", ctx.render("imex/nodes_config.cfg.j2", nvl=domain),
                "imex", f"IMEX nodes_config.cfg of NVLink domain {domain.name} ({len(domain.imex_addresses)} trays)")
    if not ctx.plan.nvlink_domains:
        w.notes.append("imex: the site has no NVL72 domain; no IMEX configuration")


def gres_type(node: Node) -> str:
    """The GRES type of a node's GPUs: NVML's name without the vendor, lowercased (NVIDIA H200 -> h200)."""
    return node.expected.gpu_model.removeprefix("NVIDIA ").replace(" ", "_").lower()


#: The Slurm release a site without `slurm.version` (or without a `slurm:` section) is rendered for.
DEFAULT_SLURM_VERSION = (23, 11)
#: topology/block (one block per NVL72 domain) exists from this release on.
TOPOLOGY_BLOCK_SINCE = (23, 11)


def _slurm_tree(ctx: Ctx, fabric: Fabric | None) -> list[tuple[str, str, list[str]]]:
    """topology/tree switches: the compute fabric's leaves (or SUs) under its spines; without a
    compute fabric, one leaf per NVL72 domain and one per pool for the other nodes."""
    plan = ctx.plan
    tree: list[tuple[str, str, list[str]]] = []
    if fabric is None:
        if not plan.nvlink_domains:
            return []
        in_domain = {n for d in plan.nvlink_domains for n in d.nodes}
        for d in plan.nvlink_domains:
            tree.append((d.name, "Nodes", list(d.nodes)))
        for pool, nodes in _pools(plan).items():
            rest = [n.name for n in nodes if n.name not in in_domain]
            if rest:
                tree.append((f"pool-{pool}", "Nodes", rest))
        if len(tree) > 1:
            tree.append(("site", "Switches", [name for name, _, _ in tree]))
        return tree
    leaves = [s for s in plan.switches if s.fabric == "compute" and s.role == "leaf"]
    spines = [s for s in plan.switches if s.fabric == "compute" and s.role == "spine"]
    if fabric.rail_optimized:
        sus: dict[int, list[str]] = {}
        for n in plan.nodes:
            sus.setdefault(n.su or 0, []).append(n.name)
        for su, names in sorted(sus.items()):
            tree.append((f"su{su:02d}", "Nodes", names))
        if spines:
            tree.append(("spines", "Switches", [f"su{su:02d}" for su in sorted(sus)]))
    else:
        for leaf in leaves:
            names = sorted({c.a_device for c in _cables_of(ctx, leaf.name) if c.a_device in ctx.nodes},
                           key=lambda x: list(ctx.nodes).index(x))
            tree.append((leaf.name, "Nodes", names))
        if spines:
            tree.append(("spines", "Switches", [leaf.name for leaf in leaves]))
    return tree


def render_slurm(ctx: Ctx, w: Writer) -> None:
    """nodes.conf, gres.conf, topology.conf for the site's Slurm release, and (a site with a
    `slurm:` section) the whole slurm.conf that includes nodes.conf."""
    plan = ctx.plan
    slurm = ctx.extras.slurm
    has_slurm = plan.site.has_slurm
    version = slurm.version_tuple() if slurm is not None else DEFAULT_SLURM_VERSION
    pools = _pools(plan)
    partitions: dict[str, list[str]] = {}
    for pool, nodes in pools.items():
        partitions.setdefault(ctx.extras.partitions.get(pool, pool), []).extend(n.name for n in nodes)
    w.write("slurm/nodes.conf", ctx.render("slurm/nodes.conf.j2", nodes=plan.nodes, partitions=partitions,
                                           gres_type=gres_type, has_slurm=has_slurm),
            "slurm", "slurm.conf fragment: NodeName lines with GRES, PartitionName lines")
    groups: dict[tuple[str, int], list[str]] = {}
    for n in plan.nodes:
        groups.setdefault((gres_type(n), n.expected.gpu_count), []).append(n.name)
    autodetect = slurm.gres_autodetect if slurm is not None else "nvml"
    w.write("slurm/gres.conf", ctx.render("slurm/gres.conf.j2", groups=groups, has_slurm=has_slurm,
                                          autodetect=autodetect),
            "slurm", f"gres.conf: GPUs per node (counts from the plan, AutoDetect={autodetect})")
    fabric = next((f for f in plan.fabrics if f.name == "compute"), None)
    topology: str | None = None
    if plan.nvlink_domains and version >= TOPOLOGY_BLOCK_SINCE:
        topology = "topology/block"
        w.write("slurm/topology.conf",
                ctx.render("slurm/topology-block.conf.j2", domains=plan.nvlink_domains, has_slurm=has_slurm),
                "slurm", "topology.conf (topology/block): one block per NVL72 domain")
    else:
        tree = _slurm_tree(ctx, fabric)
        if tree:
            topology = "topology/tree"
            what = "the compute fabric" if fabric is not None else "NVL72 domains and pools (no compute fabric)"
            w.write("slurm/topology.conf", ctx.render("slurm/topology.conf.j2", tree=tree, fabric=fabric,
                                                      has_slurm=has_slurm),
                    "slurm", f"topology.conf (topology/tree) of {what}")
    if slurm is not None and has_slurm:
        w.write("slurm/slurm.conf", ctx.render("slurm/slurm.conf.j2", slurm=slurm, topology=topology),
                "slurm", f"slurm.conf for Slurm {slurm.version} (includes nodes.conf)")
    else:
        w.notes.append("slurm: the site file has no `slurm:` section; the Slurm files are for reference")
