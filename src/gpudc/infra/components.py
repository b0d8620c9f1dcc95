"""Component resources: the plan, mapped one to one onto Pulumi resources.

    GpuSite -> Hall -> Rack -> Node (-> BmcSettings)
                          \\-> NvlinkSwitchTray (NVL72 racks)
            -> Fabric -> Switch

Names come from the plan (node, rack, hall, switch names are unique in a site), so a
re-run maps to the same URNs; a renamed thing gets an alias to its old name (from the
`infra:renames` config) instead of a replace. Nodes are protected: deleting one needs an
explicit `pulumi state unprotect`. Components only map; they never re-derive the plan.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pulumi

from gpudc.infra.bmc import BmcSettings, BmcSettingsArgs
from gpudc.infra.settings import BmcDefaults
from gpudc.plan.types import Device, Node, Plan, Rack, Switch

PKG = "gpudc"


@dataclass
class BmcPolicy:
    """What every node's BmcSettings gets: the site's BMC credentials and defaults."""

    username: str
    password: pulumi.Input[str]  # a secret Output
    defaults: BmcDefaults = field(default_factory=BmcDefaults)


@dataclass
class SiteArgs:
    plan: Plan
    bios: dict[str, dict[str, Any]]  # SKU -> BIOS attributes (catalog fact bios_attributes)
    bmc: BmcPolicy | None = None  # None: BMCs are not managed (no credentials configured)
    renames: dict[str, str] = field(default_factory=dict)  # new name -> old name


def _aliases(name: str, renames: dict[str, str]) -> list[pulumi.Input[pulumi.Alias | str]] | None:
    old = renames.get(name)
    return [pulumi.Alias(name=old)] if old else None


@dataclass
class NodeArgs:
    node: Node
    bios: dict[str, Any]
    bmc: BmcPolicy | None
    old_name: str | None = None  # the node's previous name (a rename), for the child's alias


class GpuNode(pulumi.ComponentResource):
    """A host: an HGX server or a GB200 compute tray. Type token gpudc:infra:Node."""

    def __init__(self, name: str, args: NodeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PKG}:infra:Node", name, None, opts)
        node = args.node
        self.node_name = node.name
        self.bmc_settings: BmcSettings | None = None
        if args.bmc is not None:
            bmc, defaults = args.bmc, args.bmc.defaults
            old = args.old_name
            self.bmc_settings = BmcSettings(
                f"{node.name}-bmc",
                BmcSettingsArgs(
                    node=node.name,
                    url=defaults.url(node.bmc_address),
                    username=bmc.username,
                    password=bmc.password,
                    verify=defaults.verify,
                    timeout=defaults.timeout,
                    retries=defaults.retries,
                    power_restore_policy=defaults.power_restore_policy,
                    boot_override=defaults.boot_override,
                    bios=dict(args.bios),
                    ntp_servers=defaults.ntp_servers,
                    syslog_servers=defaults.syslog_servers,
                ),
                pulumi.ResourceOptions(parent=self, aliases=[pulumi.Alias(name=f"{old}-bmc")] if old else None),
            )
        self.register_outputs(
            {
                "name": node.name,
                "sku": node.sku,
                "pool": node.pool,
                "addresses": dict(node.addresses),
                "bmcAddress": node.bmc_address,
            }
        )


class NvlinkSwitchTray(pulumi.ComponentResource):
    def __init__(self, name: str, device: Device, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PKG}:infra:NvlinkSwitchTray", name, None, opts)
        self.register_outputs({"name": device.name, "address": device.address, "bmcAddress": device.bmc_address})


@dataclass
class RackArgs:
    rack: Rack
    nodes: list[Node]
    devices: list[Device]


class GpuRack(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: RackArgs, site: SiteArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(f"{PKG}:infra:Rack", name, None, opts)
        self.nodes: list[GpuNode] = []
        self.trays: list[NvlinkSwitchTray] = []
        for node in args.nodes:
            node_opts = pulumi.ResourceOptions(parent=self, protect=True, aliases=_aliases(node.name, site.renames))
            node_args = NodeArgs(
                node=node, bios=site.bios.get(node.sku, {}), bmc=site.bmc, old_name=site.renames.get(node.name)
            )
            self.nodes.append(GpuNode(node.name, node_args, node_opts))
        for device in args.devices:
            if device.kind == "nvlink_switch_tray":
                self.trays.append(
                    NvlinkSwitchTray(
                        device.name,
                        device,
                        pulumi.ResourceOptions(parent=self, aliases=_aliases(device.name, site.renames)),
                    )
                )
        self.register_outputs({"name": args.rack.name, "nodes": list(args.rack.nodes), "powerKw": args.rack.power_kw})


class GpuHall(pulumi.ComponentResource):
    def __init__(
        self, name: str, racks: list[RackArgs], site: SiteArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(f"{PKG}:infra:Hall", name, None, opts)
        self.racks = [
            GpuRack(r.rack.name, r, site, pulumi.ResourceOptions(parent=self, aliases=_aliases(r.rack.name, site.renames)))
            for r in racks
        ]
        self.register_outputs({"name": name, "racks": [r.rack.name for r in racks]})


class SwitchComponent(pulumi.ComponentResource):
    def __init__(self, name: str, switch: Switch, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PKG}:infra:Switch", name, None, opts)
        self.register_outputs(
            {"name": switch.name, "model": switch.model, "role": switch.role, "address": switch.address}
        )


class FabricComponent(pulumi.ComponentResource):
    def __init__(
        self, name: str, switches: list[Switch], site: SiteArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(f"{PKG}:infra:Fabric", name, None, opts)
        self.switches = [
            SwitchComponent(s.name, s, pulumi.ResourceOptions(parent=self, aliases=_aliases(s.name, site.renames)))
            for s in switches
        ]
        self.register_outputs({"name": name, "switches": len(switches)})


class GpuSite(pulumi.ComponentResource):
    """A whole site: halls, racks, nodes, fabrics."""

    def __init__(self, name: str, args: SiteArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PKG}:infra:GpuSite", name, None, opts)
        plan = args.plan
        nodes_by_rack: dict[str, list[Node]] = defaultdict(list)
        for node in plan.nodes:
            nodes_by_rack[node.rack].append(node)
        devices_by_rack: dict[str, list[Device]] = defaultdict(list)
        for device in plan.devices:
            if device.rack:
                devices_by_rack[device.rack].append(device)
        racks_by_hall: dict[str, list[RackArgs]] = defaultdict(list)
        for rack in plan.racks:
            racks_by_hall[rack.hall].append(
                RackArgs(rack=rack, nodes=nodes_by_rack.get(rack.name, []), devices=devices_by_rack.get(rack.name, []))
            )
        self.halls = [
            GpuHall(
                hall.name,
                racks_by_hall.get(hall.name, []),
                args,
                pulumi.ResourceOptions(parent=self, aliases=_aliases(hall.name, args.renames)),
            )
            for hall in plan.halls
        ]
        switches_by_fabric: dict[str, list[Switch]] = defaultdict(list)
        for switch in plan.switches:
            switches_by_fabric[switch.fabric].append(switch)
        fabric_names = [f.name for f in plan.fabrics]
        fabric_names += sorted(set(switches_by_fabric) - set(fabric_names))
        self.fabrics = [
            FabricComponent(f"{name}-{fabric}", switches_by_fabric.get(fabric, []), args, pulumi.ResourceOptions(parent=self))
            for fabric in fabric_names
        ]
        self.register_outputs({"site": plan.site.name, "halls": [h.name for h in plan.halls]})
