"""Expand a site model into its plan: pure and deterministic (same input, same bytes).

Rules that need the catalog or the layout are checked here, and every problem names the
YAML path it comes from. Expansion stops after the reference checks if any fail (later
steps would only repeat them), then collects every layout problem before raising.
"""

from __future__ import annotations

import copy
import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Any

from gpudc.catalog import (
    PACKAGE_ROLES,
    Catalog,
    OsCatalog,
    Profile,
    Sku,
    current_os_catalog,
    network_conventions,
    profile_problem,
)
from gpudc.errors import InputError
from gpudc.model.site import NETWORK_NAMES, HallSpec, PoolSpec, Site
from gpudc.plan.addresses import Allocator, duplicate_addresses, overlaps
from gpudc.plan.types import (
    HOST_BOND,
    Boot,
    BootFirmware,
    Cable,
    Device,
    Expectation,
    Fabric,
    Fixture,
    Hall,
    Nic,
    Node,
    NvlinkDomain,
    Plan,
    Pool,
    Rack,
    Segment,
    SiteInfo,
    Switch,
)

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_EPS = 1e-9


@dataclass(slots=True)
class _RackSlot:
    rack: Rack
    units: int
    limit_kw: float
    free: bool = True


@dataclass(slots=True)
class _Build:
    site: Site
    catalog: Catalog
    os_catalog: OsCatalog
    problems: list[str] = field(default_factory=list)
    racks: list[Rack] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    switches: list[Switch] = field(default_factory=list)
    cables: list[Cable] = field(default_factory=list)
    fabrics: list[Fabric] = field(default_factory=list)
    domains: list[NvlinkDomain] = field(default_factory=list)
    tor_u: dict[str, int] = field(default_factory=dict)  # rack -> U of its management TOR (NVL72 layout)
    loopback_pool: Allocator | None = None  # the routed fabrics' loopbacks, when the site has any
    converged: bool = False  # storage rides the in-band fabric (catalog ethernet_design / fabrics.inband.storage)


def _switch_kw(catalog: Catalog, model: str) -> float:
    """Planning power of one switch of a model, kW (0 where the catalog has none: reported by _power)."""
    power = catalog.switches[model].power_w
    return float(power.value) / 1000 if power is not None else 0.0


def _rack_layout(sku: Sku) -> dict[str, list[int]]:
    """U of every compute tray, NVLink switch tray, power shelf and management TOR of a rack SKU.

    From the SKU's rack_layout fact; without one, trays stack contiguously from tray_u_start with
    the switch trays after the lower half of the compute trays (10 above, 8 below on an NVL72).
    """
    if "rack_layout" in sku.facts:
        return {k: [int(u) for u in v] for k, v in sku.fact("rack_layout").items()}
    start, n_compute, n_switch = (int(sku.fact(k)) for k in ("tray_u_start", "compute_trays", "switch_trays"))
    lower = n_compute - (n_compute // 2 + 1)
    compute = [start + k if k < lower else start + n_switch + k for k in range(n_compute)]
    return {"compute": compute, "nvlink_switch_tray": [start + lower + j for j in range(n_switch)],
            "power_shelf": [], "mgmt_tor": []}


def _os_problem(os_catalog: OsCatalog, os_name: str, where: str) -> str | None:
    if os_name in os_catalog.releases:
        return None
    return f"{where}: unknown OS {os_name!r} (the catalog's os/ has: {', '.join(os_catalog.names)})"


def _sku_profile(site: Site, catalog: Catalog, os_catalog: OsCatalog, problems: list[str]) -> None:
    halls = {h.name: h for h in site.halls}
    site_os_problem = _os_problem(os_catalog, site.site.os, "site.os")
    if site_os_problem:
        problems.append(site_os_problem)
    for label, names in (("halls", [h.name for h in site.halls]), ("pools", [p.name for p in site.pools])):
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                problems.append(f"{label}[{i}].name: duplicate name {name!r}")
            seen.add(name)
    for h, hall in enumerate(site.halls):
        rows = [r.name for r in hall.rows]
        for r, name in enumerate(rows):
            if rows.index(name) != r:
                problems.append(f"halls[{h}].rows[{r}].name: duplicate row {name!r}")
    for i, pool in enumerate(site.pools):
        sku = catalog.skus.get(pool.sku)
        profile = catalog.profiles.get(pool.profile)
        if sku is None:
            problems.append(f"pools[{i}].sku: unknown SKU {pool.sku!r} (catalog has: {', '.join(sorted(catalog.skus))})")
        if profile is None:
            problems.append(
                f"pools[{i}].profile: unknown profile {pool.profile!r} (catalog has: {', '.join(sorted(catalog.profiles))})"
            )
        pool_hall = halls.get(pool.hall)
        if pool_hall is None:
            problems.append(f"pools[{i}].hall: unknown hall {pool.hall!r} (site has: {', '.join(halls)})")
        if sku is None:
            continue
        os_name = pool.os or site.site.os
        os_ok = os_name in os_catalog.releases
        if pool.os is not None and not os_ok:
            problems.append(str(_os_problem(os_catalog, pool.os, f"pools[{i}].os")))
        arch = sku.facts.get("cpu_arch")
        if arch is None:
            problems.append(f"pools[{i}].sku: SKU {sku.name!r} has no cpu_arch fact (x86_64, aarch64, ...)")
        elif os_ok and arch.value not in os_catalog.releases[os_name].images:
            problems.append(f"pools[{i}].os: {os_name} has no installer for {arch.value}, the CPU of {sku.name}")
        if profile is not None:
            why = profile_problem(profile, sku)
            if why:
                problems.append(f"pools[{i}].profile: {why}")
            if os_ok and os_name not in profile.os:
                problems.append(f"pools[{i}].os: profile {profile.name!r} has no package set for {os_name}")
        if sku.is_rack and pool.racks is None:
            problems.append(f"pools[{i}].racks: {sku.name} is a rack-scale SKU; give 'racks', not 'count'")
        if not sku.is_rack and pool.count is None:
            problems.append(f"pools[{i}].count: {sku.name} is a node SKU; give 'count', not 'racks'")
        if not sku.is_rack and pool.trays_per_rack is not None:
            problems.append(f"pools[{i}].trays_per_rack: only rack-scale SKUs have trays")
        if sku.is_rack and pool.trays_per_rack and pool.trays_per_rack > int(sku.fact("compute_trays")):
            problems.append(
                f"pools[{i}].trays_per_rack: {pool.trays_per_rack} exceeds the {sku.fact('compute_trays')} "
                f"compute trays of a {sku.name} rack"
            )
        needs = sku.fact("cooling")
        if pool_hall is not None and needs == "liquid" and pool_hall.cooling != "liquid":
            problems.append(
                f"pools[{i}].hall: {sku.name} needs liquid cooling; hall {pool_hall.name!r} is {pool_hall.cooling}-cooled"
            )
    fabrics = site.fabrics
    for name in ("compute", "frontend", "storage", "inband"):
        spec = getattr(fabrics, name)
        if spec is None:
            continue
        for role in ("leaf", "spine"):
            model = getattr(spec, role)
            if model is None:
                continue
            switch = catalog.switches.get(model)
            if switch is None:
                problems.append(
                    f"fabrics.{name}.{role}: unknown switch model {model!r} "
                    f"(catalog has: {', '.join(sorted(catalog.switches))})"
                )
                continue
            if name == "compute":
                kind = "infiniband" if spec.kind == "infiniband" else "ethernet"
                if switch.kind != kind:
                    problems.append(f"fabrics.compute.{role}: {model} is an {switch.kind} switch; the fabric is {spec.kind}")
                elif int(switch.rate_gbps.value) < spec.rate_gbps:
                    problems.append(
                        f"fabrics.compute.{role}: {model} runs at {switch.rate_gbps.value}G, below the fabric's {spec.rate_gbps}G"
                    )
            elif switch.kind != "ethernet":
                problems.append(f"fabrics.{name}.{role}: {model} is not an ethernet switch")
    if fabrics.oob.switch not in catalog.switches:
        problems.append(f"fabrics.oob.switch: unknown switch model {fabrics.oob.switch!r}")
    nets = {n: getattr(site.networks, n) for n in NETWORK_NAMES if getattr(site.networks, n) is not None}
    problems.extend(overlaps(nets))


def _layout_racks(b: _Build) -> dict[str, list[_RackSlot]]:
    """Every rack position of every hall, in row order."""
    site = b.site
    slots: dict[str, list[_RackSlot]] = {}
    seen: dict[str, str] = {}
    for hall in site.halls:
        hall_slots = []
        for row in hall.rows:
            for position in range(1, row.racks + 1):
                name = site.naming.rack.format(site=site.site.name, hall=hall.name, row=row.name, position=position)
                if not _LABEL.match(name):
                    b.problems.append(f"naming.rack: gives {name!r}, not an RFC 1123 name")
                    return {}
                if name in seen:
                    b.problems.append(f"naming.rack: gives the same name {name!r} to two racks ({seen[name]} and {hall.name})")
                    return {}
                seen[name] = hall.name
                limit = row.rack_power_kw or hall.rack_power_kw
                rack = Rack(name, hall.name, row.name, position, row.rack_units, limit, 0.0, hall.cooling)
                hall_slots.append(_RackSlot(rack, row.rack_units, limit))
                b.racks.append(rack)
        slots[hall.name] = hall_slots
    return slots


def _expectation(site: Site, sku: Sku, profile: Profile, os_name: str) -> Expectation:
    roles = ["driver"]
    if sku.fact("fabric_manager"):
        roles.append("fabric_manager")
    if sku.fact("nvlsm"):
        roles.append("nvlsm")
    if sku.fact("imex"):
        roles.append("imex")
    roles += ["cuda_toolkit", "nccl", "dcgm", "rdma", "container_toolkit"]
    compute = site.fabrics.compute
    comps = profile.components
    # Split once per pool, here, so no consumer goes back to the catalog for a package's role.
    by_role = {role: profile.packages_for(os_name, (role,)) if role in roles else {} for role in PACKAGE_ROLES}
    doca = comps.get("doca_ofed")
    return Expectation(
        sku=sku.name,
        gpu_count=sku.gpus_per_node,
        gpu_model=str(sku.fact("gpu_model")),
        gpu_arch=str(sku.fact("gpu_arch")),
        profile=profile.name,
        os=os_name,
        driver_version=comps["driver"].version,
        driver_branch=str(comps["driver"].branch),
        cuda_version=comps["cuda"].version,
        nccl_version=comps["nccl"].version,
        kernel_module=str(comps["driver"].kernel_module),
        packages={name: version for role in by_role.values() for name, version in role.items()},
        pcie_gen=sku.fact("pcie_gen"),
        pcie_width=sku.fact("pcie_width"),
        nvlink_count=int(sku.fact("nvlink_links_per_gpu")),
        ib_ports=int(sku.fact("compute_nics")) if compute else 0,
        ib_rate_gbps=compute.rate_gbps if compute else 0,
        fabric_manager=bool(sku.fact("fabric_manager")),
        nvlsm=bool(sku.fact("nvlsm")),
        imex=bool(sku.fact("imex")),
        clique_required=bool(sku.fact("multi_node_nvlink")),
        busbw_floor_gbps=float(sku.fact("busbw_floor_gbps")),
        max_temp_c=int(sku.fact("max_temp_c")),
        packages_by_role=by_role,
        rdma_mode=doca.mode if doca and doca.mode else "inbox",
        doca_version=doca.version if doca else None,
    )


def _boot(os_catalog: OsCatalog, sku: Sku, os_name: str) -> Boot:
    """A pool's OS boot facts: the OS entry's installer for the SKU's CPU architecture."""
    release = os_catalog.releases[os_name]
    arch = str(sku.fact("cpu_arch"))
    image = release.images[arch]
    firmware = os_catalog.architectures[arch]
    return Boot(
        os=os_name,
        label=release.description,
        family=str(release.family.value),
        release=str(release.release.value),
        installer=str(release.installer.value),
        arch=arch,
        path=str(image.path.value),
        kernel=str(image.kernel.value),
        initrd=str(image.initrd.value),
        iso=str(image.iso.value) if image.iso else None,
        mirror=str(release.mirror.value) if release.mirror else None,
        uefi_client_arch=int(firmware.uefi_client_arch.value),
        ipxe=str(firmware.ipxe.value),
        firmware=[
            BootFirmware(name, int(f.value["client_arch"]), str(f.value["boot"]))
            for name, f in sorted(firmware.firmware.items(), key=lambda kv: int(kv[1].value["client_arch"]))
        ],
    )


def _node_name(b: _Build, i: int, pool: PoolSpec, hall: HallSpec, rack: Rack, index: int, slot: int) -> str | None:
    name = b.site.naming.node.format(
        site=b.site.site.name, hall=hall.name, row=rack.row, rack=rack.name, pool=pool.name,
        index=index, slot=slot, position=rack.position,
    )
    if not _LABEL.match(name):
        b.problems.append(f"naming.node: gives {name!r} for pools[{i}], not an RFC 1123 name")
        return None
    return name


def _place_pools(b: _Build, slots: dict[str, list[_RackSlot]]) -> None:
    site, catalog = b.site, b.catalog
    halls = {h.name: h for h in site.halls}
    for i, pool in enumerate(site.pools):
        sku = catalog.skus[pool.sku]
        profile = catalog.profiles[pool.profile]
        hall = halls[pool.hall]
        os_name = pool.os or site.site.os
        template = _expectation(site, sku, profile, os_name)
        boot = _boot(b.os_catalog, sku, os_name)
        free = [s for s in slots[hall.name] if s.free]
        node_kw = sku.node_power_kw
        node_u = sku.node_units
        if sku.is_rack:
            assert pool.racks is not None
            trays = pool.trays_per_rack or int(sku.fact("compute_trays"))
            full_kw = float(sku.fact("rack_power_kw"))
            rack_kw = full_kw * trays / int(sku.fact("compute_trays"))
            layout = _rack_layout(sku)
            need_u = max(u for us in layout.values() for u in us)
            tor_kw = _switch_kw(catalog, site.fabrics.oob.switch)  # the rack's management TOR draws too
            if pool.racks > len(free):
                b.problems.append(
                    f"pools[{i}].racks: needs {pool.racks} racks; hall {hall.name!r} has {len(free)} free"
                )
                continue
            ok = True
            for slot_ in free[: pool.racks]:
                if rack_kw + tor_kw > slot_.limit_kw + _EPS:
                    b.problems.append(
                        f"pools[{i}]: a {sku.name} rack draws {rack_kw + tor_kw:g} kW with its management TOR, "
                        f"above the {slot_.limit_kw:g} kW "
                        f"per-rack limit of hall {hall.name!r} (rack {slot_.rack.name})"
                    )
                    ok = False
                    break
                if need_u > slot_.units:
                    b.problems.append(
                        f"pools[{i}]: a {sku.name} rack needs {need_u}U; rack {slot_.rack.name} has {slot_.units}U"
                    )
                    ok = False
                    break
            if not ok:
                continue
            index = 0
            shelf_model = str(sku.fact("power_shelf_model")) if "power_shelf_model" in sku.facts else "power shelf"
            shelf_u = int(sku.fact("power_shelf_rack_units")) if "power_shelf_rack_units" in sku.facts else 1
            for slot_ in free[: pool.racks]:
                slot_.free = False
                rack = slot_.rack
                rack.power_kw = round(rack_kw, 3)
                members: list[Node] = []
                domain = f"{rack.name}-nvl"
                for k in range(trays):
                    index += 1
                    name = _node_name(b, i, pool, hall, rack, index, k + 1)
                    if name is None:
                        return
                    u = layout["compute"][k]
                    node = _new_node(b, name, pool, sku, os_name, hall.name, rack, u, index, domain, node_kw, template, boot)
                    members.append(node)
                switch_trays = []
                for j, tray_u in enumerate(layout["nvlink_switch_tray"]):
                    dev = Device(
                        f"{rack.name}-nvsw{j + 1}", "nvlink_switch_tray", str(sku.fact("switch_tray_model")),
                        hall.name, rack.name, tray_u, int(sku.fact("switch_tray_rack_units")), "", None,
                    )
                    b.devices.append(dev)
                    rack.devices.append(dev.name)
                    switch_trays.append(dev.name)
                rack.fixtures = [Fixture(f"{rack.name}-ps{j + 1}", "power_shelf", shelf_model, shelf, shelf_u)
                                 for j, shelf in enumerate(layout["power_shelf"])]
                if layout["mgmt_tor"]:
                    b.tor_u[rack.name] = layout["mgmt_tor"][0]
                b.domains.append(NvlinkDomain(domain, rack.name, [n.name for n in members], switch_trays, []))
        else:
            assert pool.count is not None
            tor_kw = _switch_kw(catalog, site.fabrics.oob.switch)  # every populated rack gets a management TOR
            fits = [_rack_capacity(s, hall.reserved_u, node_kw, node_u, pool.nodes_per_rack, tor_kw) for s in free]
            caps = [cap for cap, _ in fits]
            if max(caps, default=0) == 0:
                if free and node_kw + tor_kw > max(s.limit_kw for s in free) + _EPS:
                    why = f"one {sku.name} draws {node_kw:g} kW, above the {hall.rack_power_kw:g} kW per-rack limit"
                else:
                    why = f"no free rack with room for a {node_u}U {sku.name}" if free else "no free racks"
                b.problems.append(f"pools[{i}]: {why} of hall {hall.name!r}")
                continue
            if pool.count > sum(caps):
                limit, reason = fits[0]
                b.problems.append(
                    f"pools[{i}].count: {pool.count} nodes at {limit} per rack (limited by {reason}) need "
                    f"{math.ceil(pool.count / max(limit, 1))} racks; hall {hall.name!r} has {len(free)} free racks"
                )
                continue
            index = 0
            for s, cap in zip(free, caps, strict=True):
                if index >= pool.count:
                    break
                if cap == 0:
                    continue
                s.free = False
                rack = s.rack
                take = min(cap, pool.count - index)
                for k in range(take):
                    index += 1
                    name = _node_name(b, i, pool, hall, rack, index, k + 1)
                    if name is None:
                        return
                    _new_node(b, name, pool, sku, os_name, hall.name, rack, 1 + k * node_u, index, None, node_kw, template, boot)
                rack.power_kw = round(take * node_kw, 3)


def _rack_capacity(
    slot: _RackSlot, reserved_u: int, node_kw: float, node_u: int, cap: int | None, tor_kw: float = 0.0
) -> tuple[int, str]:
    """How many nodes of a SKU one rack takes, and what limits it (nodes_per_rack, power, space).

    The management TOR's power comes off the rack's limit first; its U is in reserved_u.
    """
    limits = [
        (int(max(slot.limit_kw - tor_kw, 0.0) / node_kw + _EPS), "power"),
        ((slot.units - reserved_u) // node_u, "space"),
    ]
    if cap:
        limits.insert(0, (cap, "nodes_per_rack"))
    return min(limits, key=lambda item: item[0])


def _new_node(
    b: _Build, name: str, pool: PoolSpec, sku: Sku, os_name: str, hall: str, rack: Rack, u: int, index: int,
    domain: str | None, power_kw: float, template: Expectation, boot: Boot,
) -> Node:
    exp = copy.copy(template)
    exp.imex_peers = []
    macs = b.site.macs.get(name)
    node = Node(
        name=name, site=b.site.site.name, hall=hall, rack=rack.name, u=u, height_u=sku.node_units,
        pool=pool.name, sku=sku.name, profile=pool.profile, os=os_name, index=index - 1, su=None,
        nvlink_domain=domain, power_kw=round(power_kw, 3), addresses={}, bmc_address="",
        boot_mac=macs.boot_port if macs else None, nics=[], expected=exp, boot=boot,
    )
    rack.nodes.append(name)
    b.nodes.append(node)
    return node


def _two_tier_spines(leaves: int, uplinks: int, radix: int) -> int | None:
    """Spines for a two-tier fat tree: every leaf reaches every spine with equal cables."""
    if leaves <= 1:
        return 0
    need = math.ceil(leaves * uplinks / radix)
    for spines in range(max(need, 1), uplinks + 1):
        if uplinks % spines == 0 and leaves * uplinks // spines <= radix:
            return spines
    return None


def _spine_layer(
    b: _Build, fabric: str, prefix: str, leaves: list[Switch], model: str, path: str, media: str,
    downlinks: int | None = None,
) -> tuple[int, int]:
    """Spines (two tiers) or pod spines + cores (three tiers) above the leaves: (spines, cores).

    Each leaf's uplinks start after its `downlinks` node-facing ports (default: half its radix, the
    uplinks taking the rest); with fewer downlinks, as many uplinks as downlinks (non-blocking)."""
    sw = b.catalog.switches[model]
    radix = int(sw.ports.value)
    rate = int(sw.rate_gbps.value)
    ports = leaves[0].ports if leaves else 0
    down = ports // 2 if downlinks is None else downlinks
    uplinks = ports - down if downlinks is None else min(down, ports - down)
    spines = _two_tier_spines(len(leaves), uplinks, radix)
    if spines is not None:
        if spines:
            _connect_two_tier(b, fabric, prefix, leaves, model, radix, rate, spines, uplinks, media, down)
        return spines, 0
    return _connect_three_tier(b, fabric, prefix, leaves, model, radix, rate, uplinks, path, media, down)


def _connect_two_tier(
    b: _Build, fabric: str, prefix: str, leaves: list[Switch], model: str, radix: int, rate: int,
    spines: int, uplinks: int, media: str, down: int,
) -> None:
    spine_switches = [
        Switch(f"{prefix}-spine{n + 1:02d}", fabric, "spine", model, radix, rate, None, None, leaves[0].hall, None, "")
        for n in range(spines)
    ]
    per_pair = uplinks // spines
    for li, leaf in enumerate(leaves):
        for k in range(uplinks):
            spine = spine_switches[k % spines]
            port = li * per_pair + k // spines + 1
            b.cables.append(Cable(fabric, leaf.name, str(down + k + 1), spine.name, str(port), media, "cross-row"))
            spine.used_ports += 1
        leaf.used_ports += uplinks
    b.switches.extend(spine_switches)


def _connect_three_tier(
    b: _Build, fabric: str, prefix: str, leaves: list[Switch], model: str, radix: int, rate: int,
    uplinks: int, path: str, media: str, down: int,
) -> tuple[int, int]:
    """Pods of radix/2 leaves, each leaf wired once to each of its pod's spines; spine j of
    every pod wired to core plane j (a three-tier fat tree, as SuperPODs past 2 tiers use)."""
    half = radix // 2
    pod_size = half
    pods = math.ceil(len(leaves) / pod_size)
    per_plane = math.ceil(pods * half / radix)
    if uplinks > half or per_plane > half:
        b.problems.append(
            f"{path}: {len(leaves)} leaves exceed a three-tier fat tree of {model} (radix {radix}); "
            "split the site or use a larger switch"
        )
        return 0, 0
    cores = [
        [Switch(f"{prefix}-core{j + 1:02d}-{c + 1:02d}", fabric, "core", model, radix, rate, None, None,
                leaves[0].hall, None, "") for c in range(per_plane)]
        for j in range(uplinks)
    ]
    spine_count = 0
    for p in range(pods):
        members = leaves[p * pod_size : (p + 1) * pod_size]
        pod_spines = [
            Switch(f"{prefix}-pod{p + 1:02d}-spine{j + 1:02d}", fabric, "spine", model, radix, rate, None, None,
                   members[0].hall, None, "")
            for j in range(uplinks)
        ]
        spine_count += len(pod_spines)
        for li, leaf in enumerate(members):
            for j, spine in enumerate(pod_spines):
                b.cables.append(Cable(fabric, leaf.name, str(down + j + 1), spine.name, str(li + 1), media, "cross-row"))
                spine.used_ports += 1
            leaf.used_ports += uplinks
        for j, spine in enumerate(pod_spines):
            for k in range(half):
                core_index, port_index = divmod(p * half + k, radix)  # fill each core of the plane in turn
                core = cores[j][core_index]
                port = port_index + 1
                b.cables.append(Cable(fabric, spine.name, str(half + k + 1), core.name, str(port), media, "cross-hall"))
                spine.used_ports += 1
                core.used_ports += 1
        b.switches.extend(pod_spines)
    for plane in cores:
        b.switches.extend(plane)
    return spine_count, uplinks * per_plane


def _compute_fabric(b: _Build, allocator: Allocator | None) -> None:
    spec = b.site.fabrics.compute
    if spec is None or not b.nodes:
        return
    leaf_model = b.catalog.switches[spec.leaf]
    radix = int(leaf_model.ports.value)
    down = radix // 2
    rails = max(int(b.catalog.skus[n.sku].fact("compute_nics")) for n in b.nodes)
    su_size = spec.su_size
    prefix = "ib" if spec.kind == "infiniband" else "roce"
    media = f"osfp-{spec.rate_gbps}g"
    if spec.rail_optimized:
        per_rail = math.ceil(su_size / down)
        per_su = rails * per_rail
    else:
        per_su = math.ceil(su_size * rails / down)
        per_rail = 0
    n_su = math.ceil(len(b.nodes) / su_size)
    leaves: list[Switch] = []
    for su in range(n_su):
        first = b.nodes[su * su_size]
        for n in range(per_su):
            rail = n // per_rail if spec.rail_optimized else None
            leaves.append(
                Switch(f"{prefix}-su{su + 1:02d}-leaf{n + 1:02d}", "compute", "leaf", spec.leaf, radix,
                       int(leaf_model.rate_gbps.value), su + 1, rail, first.hall, None, "")
            )
    nic_names_cache: dict[str, list[str]] = {}
    for j, node in enumerate(b.nodes):
        su, slot = divmod(j, su_size)
        node.su = su + 1
        sku = b.catalog.skus[node.sku]
        names = nic_names_cache.get(node.sku)
        if names is None:
            count = int(sku.fact("compute_nics"))
            names = list(sku.fact("compute_nic_names")) if "compute_nic_names" in sku.facts else [f"mlx5_{r}" for r in range(count)]
            nic_names_cache[node.sku] = names
        for rail, nic_name in enumerate(names):
            if spec.rail_optimized:
                leaf_index = su * per_su + rail * per_rail + slot // down
                port = slot % down + 1
            else:
                endpoint = slot * rails + rail
                leaf_index = su * per_su + endpoint // down
                port = endpoint % down + 1
            leaf = leaves[leaf_index]
            leaf.used_ports += 1
            address = allocator.take() if allocator else None
            node.nics.append(Nic(nic_name, "compute", rail, spec.rate_gbps, address, None, leaf.name, str(port)))
            b.cables.append(Cable("compute", node.name, nic_name, leaf.name, str(port), media, "in-row"))
    b.switches.extend(leaves)
    spines, cores = _spine_layer(b, "compute", prefix, leaves, spec.spine, "fabrics.compute", media)
    b.fabrics.append(
        Fabric("compute", spec.kind, spec.rate_gbps, spec.rail_optimized, su_size, len(leaves), spines, cores)
    )


def _paired_slots(nodes: list[Node], down: int) -> list[list[tuple[int, int]]]:
    """(leaf index, port) of each node's ports on leaf pairs (2k, 2k+1): a dual-homed node takes the same port
    number on both leaves of a pair (its bond's local ES id on both), a single-homed one a port on the pair's
    less used leaf."""
    out: list[list[tuple[int, int]]] = []
    pair, used = 0, [0, 0]
    for node in nodes:
        if node.homing == "dual":
            k = max(used) + 1
            if k > down:
                pair, used, k = pair + 1, [0, 0], 1
            used = [k, k]
            out.append([(2 * pair, k), (2 * pair + 1, k)])
        else:
            side = 0 if used[0] <= used[1] else 1
            if used[side] >= down:
                pair, used, side = pair + 1, [0, 0], 0
            used[side] += 1
            out.append([(2 * pair + side, used[side])])
    return out


def _mac_plus(mac: str, n: int) -> str:
    value = int(mac.replace(":", ""), 16) + n
    raw = f"{value:012x}"
    return ":".join(raw[i:i + 2] for i in range(0, 12, 2))


def _ethernet_fabric(b: _Build, name: str, per_node: int, allocator: Allocator | None) -> None:
    spec = getattr(b.site.fabrics, name)
    if spec is None or not b.nodes:
        return
    model = b.catalog.switches[spec.leaf]
    radix = int(model.ports.value)
    down = radix // 2 if spec.spine else radix
    if spec.downlinks is not None:
        most = radix - 1 if spec.spine else radix
        if spec.downlinks > most:
            b.problems.append(
                f"fabrics.{name}.downlinks: {spec.downlinks} node-facing ports per leaf; a {spec.leaf} has "
                f"{radix} ports" + (", one at least is an uplink to the spines" if spec.spine else "")
                + f" (at most {most})"
            )
            return
        down = spec.downlinks
    dual = name == BOOT_NETWORK and any(n.homing == "dual" for n in b.nodes)
    if dual:
        slots = _paired_slots(b.nodes, down)
    else:
        slots = [[(e // down, e % down + 1) for e in range(i * per_node, (i + 1) * per_node)]
                 for i in range(len(b.nodes))]
    n_leaves = max(leaf for node_slots in slots for leaf, _ in node_slots) + 1
    if dual:
        n_leaves += n_leaves % 2
    if n_leaves > 1 and not spec.spine:
        endpoints = sum(len(node_slots) for node_slots in slots)
        why = "dual-homed nodes need a leaf pair" if dual else "switch ports exhausted"
        b.problems.append(
            f"fabrics.{name}: {endpoints} ports need {n_leaves} {spec.leaf} leaves; add a 'spine' ({why})"
        )
        return
    media = f"qsfp-{spec.rate_gbps}g"
    first_on: dict[int, str] = {}
    for node, node_slots in zip(b.nodes, slots, strict=True):
        for leaf_index, _ in node_slots:
            first_on.setdefault(leaf_index, node.hall)
    leaves = [
        Switch(f"{name}-leaf{n + 1:02d}", name, "leaf", spec.leaf, radix, int(model.rate_gbps.value),
               None, None, first_on.get(n, b.nodes[-1].hall), None, "")
        for n in range(n_leaves)
    ]
    if dual:
        base = str(network_conventions()["evpn_multihoming"]["es_sys_mac_base"])
        for k in range(0, n_leaves, 2):
            a, z = leaves[k], leaves[k + 1]
            a.es_peer, z.es_peer = z.name, a.name
            a.es_sys_mac = z.es_sys_mac = _mac_plus(base, k // 2 + 1)
    for node, node_slots in zip(b.nodes, slots, strict=True):
        port_macs = _inband_macs(b.site, node.name) if name == BOOT_NETWORK else []
        if node.homing == "dual" and dual:  # what the validator checks of its bond (gpudc.validate.checks.bond)
            node.expected.bond_members = len(node_slots)
            node.expected.bond_partner_mac = leaves[node_slots[0][0]].es_sys_mac
        for k, (leaf_index, port_no) in enumerate(node_slots):
            leaf, port = leaves[leaf_index], str(port_no)
            leaf.used_ports += 1
            nic = f"{name}{k}"
            mac = port_macs[k] if len(port_macs) > k else None
            existing = next((n for n in node.nics if n.name == nic), None)
            if existing is not None:  # the in-band NIC exists already (it carries the SSH address)
                existing.rate_gbps, existing.switch, existing.switch_port = spec.rate_gbps, leaf.name, port
                existing.mac = mac or existing.mac
            else:
                address = allocator.take() if allocator else None
                if address and k == 0:
                    node.addresses[name] = address
                node.nics.append(Nic(nic, name, None, spec.rate_gbps, address, mac, leaf.name, port))
            b.cables.append(Cable(name, node.name, nic, leaf.name, port, media, "in-row"))
    b.switches.extend(leaves)
    spines, cores = (_spine_layer(b, name, name, leaves, spec.spine, f"fabrics.{name}", media, spec.downlinks)
                     if spec.spine else (0, 0))
    b.fabrics.append(Fabric(name, "ethernet", spec.rate_gbps, False, None, len(leaves), spines, cores))


def _inband_macs(site: Site, node: str) -> list[str]:
    """The node's in-band ports' MACs the site lists (gpudc:macs.<node>.inband), in cabling order."""
    macs = site.macs.get(node)
    return list(macs.inband) if macs else []


def network_vlan(site: Site, network: str) -> int:
    """A network's VLAN: the site's (networks.<name>.vlan), else the catalog's default for that network."""
    spec = getattr(site.networks, network)
    return (spec.vlan if spec is not None else None) or int(network_conventions()["default_vlan"][network])


def _north_south(b: _Build) -> None:
    """Each node's in-band homing, and whether storage rides the in-band fabric (b.converged): as the SKU's
    reference architecture says (catalog ethernet_design), or as fabrics.inband.homing / .storage set."""
    site = b.site
    for name in ("frontend", "storage"):
        other = getattr(site.fabrics, name)
        if other is not None and (other.homing is not None or other.storage is not None):
            b.problems.append(f"fabrics.{name}: 'homing' and 'storage' belong to the in-band fabric (fabrics.inband)")
    spec = site.fabrics.inband
    if spec is None:
        return
    # a SKU the catalog records no design for (an overlay's own) keeps one port and a separate storage fabric
    unknown = {"homing": "single", "inband_storage": "separate"}
    design: dict[str, dict[str, str]] = network_conventions()["ethernet_design"]
    design = {sku: design.get(sku, unknown) for sku in {n.sku for n in b.nodes}}
    skus = sorted(design)
    for node in b.nodes:
        node.homing = spec.homing or design[node.sku]["homing"]
        port_macs = _inband_macs(site, node.name)
        if port_macs and len(port_macs) != (2 if node.homing == "dual" else 1):
            b.problems.append(
                f"macs.{node.name}.inband: {len(port_macs)} MACs for a {node.homing}-homed node "
                f"({'two ports' if node.homing == 'dual' else 'one port'})"
            )
    storage: str | None = spec.storage
    if storage is None and site.networks.storage is not None:
        kinds = {design[s]["inband_storage"] for s in skus}
        if len(kinds) > 1:
            said = ", ".join(f"{s} {design[s]['inband_storage']}" for s in skus)
            b.problems.append(f"fabrics.inband.storage: the site's SKUs disagree on storage ({said}); "
                              "set converged or separate")
            return
        storage = kinds.pop()
    b.converged = storage == "converged"
    if b.converged and site.fabrics.storage is not None:
        refs = sorted({design[s].get("reference", s) for s in skus if design[s]["inband_storage"] == "converged"})
        b.problems.append(
            "fabrics.storage: storage rides the in-band fabric (converged"
            + (f", {'; '.join(refs)}" if spec.storage is None else "") + "); remove fabrics.storage, "
            "or set fabrics.inband.storage: separate"
        )


def _oob(b: _Build) -> None:
    model_name = b.site.fabrics.oob.switch
    model = b.catalog.switches[model_name]
    ports = int(model.ports.value)
    devices_by_rack: dict[str, list[Device]] = {}
    for dev in b.devices:
        devices_by_rack.setdefault(dev.rack or "", []).append(dev)
    nodes_by_rack: dict[str, list[Node]] = {}
    for node in b.nodes:
        nodes_by_rack.setdefault(node.rack, []).append(node)
    for rack in b.racks:
        nodes = nodes_by_rack.get(rack.name, [])
        devs = devices_by_rack.get(rack.name, [])
        if not nodes and not devs:
            continue
        need = len(nodes) + 3 * len(devs)
        if need > ports:
            b.problems.append(
                f"fabrics.oob.switch: rack {rack.name} needs {need} OOB ports, one {model_name} has {ports} "
                f"(switch ports exhausted)"
            )
            continue
        switch = Switch(f"{rack.name}-oob", "oob", "oob", model_name, ports, int(model.rate_gbps.value),
                        None, None, rack.hall, rack.name, "", need)
        b.switches.append(switch)
        rack.devices.append(switch.name)
        port = 0
        for node in nodes:
            port += 1
            b.cables.append(Cable("oob", node.name, "bmc", switch.name, str(port), "rj45-1g", "in-rack"))
        for dev in devs:
            for mgmt in ("come1", "come2", "bmc"):
                port += 1
                b.cables.append(Cable("oob", dev.name, mgmt, switch.name, str(port), "rj45-1g", "in-rack"))


def _power(b: _Build) -> list[Hall]:
    """Switch power where each switch sits, then the rack and hall limits.

    Management TORs sit in their rack (at the NVL72 layout's TOR U, else the rack's top U, inside
    reserved_u). Fabric switches go into the hall's empty racks, as the RA's network racks, filled
    in plan order up to each rack's U and kW; a switch no rack can take counts in its hall only.
    """
    site, catalog = b.site, b.catalog
    used = [(f"fabrics.{f}.{role}", getattr(getattr(site.fabrics, f), role))
            for f in ("compute", "frontend", "storage", "inband") if getattr(site.fabrics, f) is not None
            for role in ("leaf", "spine")] + [("fabrics.oob.switch", site.fabrics.oob.switch)]
    placed = {sw.model for sw in b.switches}
    for path, name in used:
        if name in placed and catalog.switches[name].power_w is None:
            b.problems.append(f"{path}: switch model {name!r} has no power_w in the catalog; its power cannot be counted")
    racks = {r.name: r for r in b.racks}
    occupied = {r.name for r in b.racks if r.nodes or r.devices}
    network = {h.name: [r for r in b.racks if r.hall == h.name and r.name not in occupied] for h in site.halls}
    next_u = {r.name: 1 for r in b.racks}
    base_kw = {r.name: r.power_kw for r in b.racks}
    loose: dict[str, float] = {}
    for sw in b.switches:
        sw.power_kw = _switch_kw(catalog, sw.model)
        sw.height_u = int(catalog.switches[sw.model].rack_units.value)
        if sw.rack is not None:
            rack = racks[sw.rack]
            sw.u = b.tor_u.get(rack.name, rack.height_u - sw.height_u + 1)
        else:
            for rack in network.get(sw.hall, []):
                fits_u = next_u[rack.name] + sw.height_u - 1 <= rack.height_u
                if fits_u and rack.power_kw + sw.power_kw <= rack.power_limit_kw + _EPS:
                    sw.rack, sw.u = rack.name, next_u[rack.name]
                    next_u[rack.name] += sw.height_u
                    break
            else:
                loose[sw.hall] = loose.get(sw.hall, 0.0) + sw.power_kw
                continue
        rack = racks[sw.rack]
        rack.switches.append(sw.name)
        rack.switch_power_kw += sw.power_kw
        rack.power_kw = base_kw[rack.name] + rack.switch_power_kw
    halls = []
    for h, spec in enumerate(site.halls):
        hall_racks = [r for r in b.racks if r.hall == spec.name]
        for rack in hall_racks:
            rack.power_kw = round(rack.power_kw, 3)
            rack.switch_power_kw = round(rack.switch_power_kw, 3)
            if rack.power_kw > rack.power_limit_kw + _EPS:
                b.problems.append(
                    f"halls[{h}].rack_power_kw: rack {rack.name} draws {rack.power_kw:g} kW with its switches, "
                    f"above its limit of {rack.power_limit_kw:g} kW"
                )
        switch_kw = round(sum(r.switch_power_kw for r in hall_racks) + loose.get(spec.name, 0.0), 3)
        power = round(sum(r.power_kw for r in hall_racks) + loose.get(spec.name, 0.0), 3)
        if power > spec.power_kw + _EPS:
            b.problems.append(
                f"halls[{h}].power_kw: the plan draws {power:g} kW in hall {spec.name!r}, above its limit of {spec.power_kw:g} kW"
            )
        halls.append(Hall(spec.name, spec.power_kw, power, spec.cooling, [r.name for r in hall_racks], switch_kw))
    return halls


#: Networks carried as EVPN segments over the Ethernet fabric of the same name (compute: when RoCE).
_SEGMENT_NETWORKS = ("inband", "frontend", "storage", "compute")
#: The network nodes PXE-boot on: its leaves relay DHCP to the boot servers.
BOOT_NETWORK = "inband"


def routed_switches(switches: list[Switch], fabrics: list[Fabric]) -> list[Switch]:
    """The switches of the routed Ethernet fabrics (frontend, storage, inband; a RoCE compute fabric)."""
    kinds = {f.name: f.kind for f in fabrics}
    return [s for s in switches if s.fabric != "oob" and kinds.get(s.fabric) in ("ethernet", "roce")]


def _asn(net: dict[str, Any], switch: Switch, leaf_index: int, three_tier: bool) -> int:
    """ASN plan of the eBGP underlay (conventions.yaml, RFC 7938 style): each leaf its own ASN; the
    spines of a two-tier fabric share the block's first ASN; in three tiers the cores take it and
    each pod's spines share one ASN of the block's upper half (so paths between pods keep no loop)."""
    stride = int(net["bgp_asn_fabric_stride"])
    base = int(net["bgp_asn_base"]) + net["bgp_asn_fabric_index"].get(switch.fabric, 9) * stride
    if switch.role == "leaf":
        return base + leaf_index
    if switch.role == "spine" and three_tier:
        pod = re.search(r"-pod(\d+)-", switch.name)
        return base + stride // 2 + (int(pod.group(1)) if pod else 0)
    return base


def _boot_servers(b: _Build) -> list[str]:
    """The boot/DNS/HTTP servers: the site's, or one address counted down from the top of the
    in-band reserve (catalog boot_server_offset), never the anycast gateway at its bottom."""
    spec = b.site.networks.inband
    prefixes = [ipaddress.IPv4Network(p) for p in spec.prefixes]
    if b.site.networks.boot_servers:
        out = []
        for i, address in enumerate(b.site.networks.boot_servers):
            if not any(address in p for p in prefixes):
                b.problems.append(f"networks.boot_servers[{i}]: {address} is not in the in-band network "
                                  f"({', '.join(spec.prefixes)})")
            out.append(str(address))
        return out
    offset = int(network_conventions()["boot_server_offset"])
    if spec.reserve < 2 + offset:
        b.problems.append(f"networks.inband.reserve: {spec.reserve} reserved addresses hold no boot server beside "
                          "the gateway; reserve at least 2 or set networks.boot_servers")
        return []
    return [str(prefixes[0].network_address + spec.reserve - offset)]


def _fabric_routing(b: _Build) -> tuple[list[Segment], list[str]]:
    """Routed Ethernet fabrics: ASN and loopback per switch, EVPN segments with anycast gateways and
    each leaf's own SVI address (from the top of each prefix), DHCP relay on the boot network."""
    site = b.site
    net = network_conventions()
    boot_servers = _boot_servers(b)
    switches = routed_switches(b.switches, b.fabrics)
    if not switches:
        return [], boot_servers
    if site.networks.loopback is None:
        names = sorted({s.fabric for s in switches})
        b.problems.append(f"networks.loopback: the routed fabrics ({', '.join(names)}) need a loopback prefix "
                          "(BGP router-id, VXLAN tunnel source)")
        return [], boot_servers
    lo = Allocator("loopback", site.networks.loopback)
    if len(switches) > lo.capacity:
        b.problems.append(f"networks.loopback: needs {len(switches)} addresses, its prefixes hold {lo.capacity} "
                          "(pool exhausted)")
        return [], boot_servers
    b.loopback_pool = lo
    leaf_no: dict[str, int] = {}
    cores = {s.fabric for s in switches if s.role == "core"}
    leaves: dict[str, list[Switch]] = {}
    for sw in switches:
        if sw.role == "leaf":
            leaf_no[sw.fabric] = leaf_no.get(sw.fabric, 0) + 1
            leaves.setdefault(sw.fabric, []).append(sw)
        sw.asn = _asn(net, sw, leaf_no.get(sw.fabric, 0), sw.fabric in cores)
        sw.loopback = lo.take()
    segments = []
    for name in _SEGMENT_NETWORKS:
        spec = getattr(site.networks, name)
        carrier = BOOT_NETWORK if name == "storage" and b.converged else name
        fabric_leaves = leaves.get(carrier, [])
        if spec is None or not fabric_leaves:
            continue
        vlan = network_vlan(site, name)
        nets = [ipaddress.IPv4Network(p) for p in spec.prefixes]
        for k, leaf in enumerate(fabric_leaves):
            leaf.svi[name] = [str(n.broadcast_address - 1 - k) for n in nets]
        segments.append(Segment(
            name, carrier, name, vlan, int(net["vni_base"]["l2"]) + vlan, int(net["vni_base"]["l3"]) + vlan,
            list(spec.prefixes), [f"{n.network_address + 1}/{n.prefixlen}" for n in nets],
            [leaf.name for leaf in fabric_leaves], list(boot_servers) if name == BOOT_NETWORK else [],
        ))
    return segments, boot_servers


def _storage_nics_per_node(b: _Build) -> int:
    """Storage ports cabled per node: the storage fabric is built for the widest SKU of the site."""
    return max(int(b.catalog.skus[n.sku].fact("storage_nics")) for n in b.nodes)


def _addresses(b: _Build) -> dict[str, Allocator]:
    """Check every pool's capacity, then allocate in a fixed order."""
    site = b.site
    need: dict[str, int] = {}
    need["oob"] = len(b.nodes) + 2 * len(b.devices)  # node BMCs; tray ComE + BMC
    need["inband"] = len(b.nodes)
    if site.fabrics.frontend is not None and site.networks.frontend is not None:
        need["frontend"] = len(b.nodes)
    if b.converged and site.networks.storage is not None:  # one address per node, on its in-band link's VLAN
        need["storage"] = len(b.nodes)
    elif site.fabrics.storage is not None and site.networks.storage is not None:
        need["storage"] = len(b.nodes) * _storage_nics_per_node(b)
    if site.fabrics.compute is not None and site.networks.compute is not None:
        need["compute"] = sum(int(b.catalog.skus[n.sku].fact("compute_nics")) for n in b.nodes)
    allocators: dict[str, Allocator] = {}
    for name, count in need.items():
        spec = getattr(site.networks, name)
        if spec is None or count == 0:
            continue
        allocator = Allocator(name, spec)
        if count > allocator.capacity:
            b.problems.append(
                f"networks.{name}: needs {count} addresses, its prefixes hold {allocator.capacity} (pool exhausted)"
            )
        allocators[name] = allocator
    return allocators


def expand(
    site: Site, catalog: Catalog, stack: str = "", source: str | None = None, os_catalog: OsCatalog | None = None,
) -> Plan:
    """The plan of a site. Raises InputError with every problem, each with its YAML path.

    `os_catalog` defaults to the current project's OS entries (catalog/os/).
    """
    os_catalog = os_catalog or current_os_catalog()
    b = _Build(site, catalog, os_catalog)
    _sku_profile(site, catalog, os_catalog, b.problems)
    if b.problems:
        raise InputError(b.problems, source=source)
    slots = _layout_racks(b)
    if not b.problems:
        _place_pools(b, slots)
    names: dict[str, int] = {}
    for node in b.nodes:
        names[node.name] = names.get(node.name, 0) + 1
    dupes = sorted(n for n, c in names.items() if c > 1)
    if dupes:
        b.problems.append(f"naming.node: gives duplicate names {', '.join(dupes[:5])}" + (" ..." if len(dupes) > 5 else ""))
    if b.problems:
        raise InputError(b.problems, source=source)

    _north_south(b)
    if b.problems:
        raise InputError(b.problems, source=source)
    allocators = _addresses(b)
    if b.problems:
        raise InputError(b.problems, source=source)
    oob = allocators["oob"]
    inband = allocators["inband"]
    for node in b.nodes:
        node.bmc_address = oob.take()
        node.addresses["inband"] = inband.take()
        node.nics.append(Nic("inband0", "inband", None, 0, node.addresses["inband"], node.boot_mac, None, None))
    if b.converged and "storage" in allocators:  # storage on a VLAN of the in-band link (the bond when dual)
        storage = allocators["storage"]
        vlan = network_vlan(site, "storage")
        for node in b.nodes:
            node.addresses["storage"] = storage.take()
            link = HOST_BOND if node.homing == "dual" else "inband0"
            node.nics.append(Nic(f"{link}.{vlan}", "storage", None, 0, node.addresses["storage"], None, None, None))
    for dev in b.devices:
        dev.address = oob.take()
        dev.bmc_address = oob.take()
    node_by_name = {n.name: n for n in b.nodes}
    for domain in b.domains:
        domain.imex_addresses = [node_by_name[n].addresses["inband"] for n in domain.nodes]
        for n in domain.nodes:
            node_by_name[n].expected.imex_peers = list(domain.imex_addresses)

    _compute_fabric(b, allocators.get("compute"))
    if site.fabrics.frontend is not None:
        _ethernet_fabric(b, "frontend", 1, allocators.get("frontend"))
    if site.fabrics.storage is not None:
        _ethernet_fabric(b, "storage", _storage_nics_per_node(b), allocators.get("storage"))
    if site.fabrics.inband is not None:
        _ethernet_fabric(b, "inband", 1, None)
    _oob(b)
    segments, boot_servers = _fabric_routing(b)
    halls = _power(b) if not b.problems else []
    if b.problems:
        raise InputError(b.problems, source=source)

    # Switch management addresses come last so node addresses don't move when a fabric grows.
    need_switch = len(b.switches)
    if oob.used + need_switch > oob.capacity:
        raise InputError(
            [f"networks.oob: needs {oob.used + need_switch} addresses, its prefixes hold {oob.capacity} (pool exhausted)"],
            source=source,
        )
    for switch in b.switches:
        switch.address = oob.take()

    pools = [
        Pool(name, list(a.spec.prefixes), a.used, a.capacity - a.used) for name, a in sorted(
            allocators.items(), key=lambda kv: NETWORK_NAMES.index(kv[0])
        )
    ]
    info = SiteInfo(
        site.site.name, site.site.provider, site.site.region, site.site.data_residency, stack,
        bool(site.slurm and site.slurm.enabled),
    )
    lo = b.loopback_pool
    if lo is not None:
        pools.append(Pool("loopback", list(lo.spec.prefixes), lo.used, lo.capacity - lo.used))
    plan = Plan(info, halls, b.racks, b.nodes, b.devices, b.switches, b.cables, b.fabrics, pools, b.domains,
                segments, boot_servers)
    # Every address of the plan is unique across all networks (also the boot servers and gateways).
    # (getattr: the Slurm controller's address is a newer SlurmSpec field)
    slurm_address = getattr(site.slurm, "controller_address", None) if site.slurm else None
    extra = {str(slurm_address): "slurm controller"} if slurm_address else {}
    twice = duplicate_addresses(plan, extra)
    if twice:
        raise InputError([f"networks: address {a} is planned twice ({x} and {y})" for a, x, y in twice[:10]],
                         source=source)
    return plan
