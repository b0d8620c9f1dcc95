"""The plan: every device, address, cable and expectation of a site.

Plain slotted dataclasses (not pydantic): a 100,000-GPU plan has ~10^5 objects and must
expand in well under two seconds. Everything downstream (Pulumi, render, provision,
validate, reprovision) reads these types and never re-derives what they hold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class Expectation:
    """What a healthy node looks like; the validator checks exactly this."""

    sku: str
    gpu_count: int
    gpu_model: str  # NVML's name, e.g. "NVIDIA H200"
    gpu_arch: str  # hopper | blackwell
    profile: str  # software profile name
    os: str  # an OS of the catalog (catalog/os/)
    driver_version: str
    driver_branch: str
    cuda_version: str  # "13.0"
    nccl_version: str
    kernel_module: str  # open | proprietary
    packages: dict[str, str]  # apt package -> exact version the profile pins for this OS
    pcie_gen: int | None  # None where the GPU does not hang off PCIe (GB200: NVLink-C2C)
    pcie_width: int | None
    nvlink_count: int  # active NVLink links per GPU
    ib_ports: int  # compute fabric ports (one per rail)
    ib_rate_gbps: int
    fabric_manager: bool  # nvidia-fabricmanager must run (HGX with NVSwitch)
    nvlsm: bool  # NVLink subnet manager beside FM (Blackwell HGX)
    imex: bool  # nvidia-imex must run (GB200 trays)
    clique_required: bool  # fabric cliqueId must be non-zero (multi-node NVLink)
    imex_peers: list[str] = field(default_factory=list)  # addresses in nodes_config.cfg
    busbw_floor_gbps: float | None = None  # single-node all_reduce floor (full level)
    max_temp_c: int = 85
    # `packages` split by the profile's package roles (catalog PACKAGE_ROLES, in install order);
    # every role is a key, empty where this SKU needs none (no fabric manager on a GB200 tray).
    packages_by_role: dict[str, dict[str, str]] = field(default_factory=dict)
    rdma_mode: str = "inbox"  # inbox rdma-core, or doca (the profile's doca_ofed component)
    doca_version: str | None = None
    # a dual-homed node: its in-band LACP bond (HOST_BOND) and the LACP partner it must see, the leaf pair's
    # EVPN multihoming system MAC; 0 / None for a single-homed node
    bond_members: int = 0
    bond_partner_mac: str | None = None


#: A dual-homed node's in-band LACP bond: the rendered netplan makes it, the validator checks it.
HOST_BOND = "bond0"


@dataclass(slots=True)
class Boot:
    """How a node installs its OS over the network (catalog/os); the PXE and DHCP files read this."""

    os: str
    label: str  # e.g. "Ubuntu 24.04 live-server"
    family: str  # ubuntu | debian
    release: str  # codename: noble, jammy, bookworm
    installer: str  # autoinstall (Ubuntu subiquity) | preseed (debian-installer)
    arch: str  # CPU architecture of the SKU: x86_64 | aarch64
    path: str  # installer folder on the boot server, relative to the site's boot URL
    kernel: str  # file names in that folder
    initrd: str
    iso: str | None  # live ISO the installer fetches (autoinstall); None for netboot installers
    mirror: str | None  # package mirror URL the installer uses (preseed)
    uefi_client_arch: int  # DHCP option 93 that the node's UEFI firmware sends
    ipxe: str  # iPXE binary the DHCP server hands that firmware
    # every option 93 value of this architecture the DHCP server answers (catalog/os/architectures.yaml)
    firmware: list[BootFirmware] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BootFirmware:
    """One UEFI client type (DHCP option 93) and how it fetches iPXE: TFTP file name or HTTP URL."""

    name: str  # e.g. uefi-arm64-http
    client_arch: int
    method: str  # tftp | http


@dataclass(slots=True)
class Nic:
    name: str  # mlx5_0 ... or eth names for ethernet networks
    network: str  # compute | frontend | storage | inband | oob
    rail: int | None  # compute rail index, None elsewhere
    rate_gbps: int
    address: str | None = None
    mac: str | None = None
    switch: str | None = None  # far end switch name
    switch_port: str | None = None


@dataclass(slots=True)
class Node:
    """A host the tools log into: an HGX server or a GB200 compute tray."""

    name: str
    site: str
    hall: str
    rack: str
    u: int  # lowest rack unit occupied (1-based)
    height_u: int
    pool: str
    sku: str
    profile: str
    os: str
    index: int  # position in the pool, 0-based
    su: int | None  # scalable unit of the compute fabric
    nvlink_domain: str | None  # NVL72 rack domain name, None for HGX (own NVSwitch domain)
    power_kw: float
    addresses: dict[str, str]  # network -> address (inband is the one SSH uses)
    bmc_address: str
    boot_mac: str | None
    nics: list[Nic]
    expected: Expectation
    boot: Boot  # shared by the nodes of a pool (one OS, one SKU): read, never change
    # North-south (in-band) homing: "dual" = two ports to a leaf pair as one LACP bond (EVPN multihoming),
    # the bond taking the boot port's MAC so its Kea reservation holds from PXE to the installed OS
    homing: str = "single"

    @property
    def ssh_address(self) -> str:
        return self.addresses["inband"]


@dataclass(slots=True)
class Device:
    """A managed device that is not a node: NVLink switch tray, power shelf, switch."""

    name: str
    kind: str  # nvlink_switch_tray | switch
    model: str
    hall: str
    rack: str | None
    u: int | None
    height_u: int
    address: str  # management address (OOB)
    bmc_address: str | None = None


@dataclass(slots=True)
class Switch:
    name: str
    fabric: str  # compute | frontend | storage | inband | oob
    role: str  # leaf | spine | core | oob
    model: str
    ports: int
    port_rate_gbps: int
    su: int | None
    rail: int | None
    hall: str
    rack: str | None
    address: str  # management address on the OOB network
    used_ports: int = 0
    u: int | None = None  # lowest rack unit, where the plan places it in a rack
    height_u: int = 1
    power_kw: float = 0.0  # planning power of the model (catalog power_w), counted in its rack or hall
    # Routed Ethernet fabrics (frontend, storage, inband, RoCE compute): BGP unnumbered underlay.
    asn: int | None = None
    loopback: str | None = None  # /32: BGP router-id and VXLAN tunnel source
    svi: dict[str, list[str]] = field(default_factory=dict)  # leaf: network -> its own SVI address per prefix
    # EVPN multihoming: the leaf pair's shared Ethernet segment system MAC (the LACP system id dual-homed
    # nodes see on both links) and the other leaf of the pair
    es_sys_mac: str | None = None
    es_peer: str | None = None


@dataclass(slots=True)
class Segment:
    """A tenant network carried over an Ethernet fabric as EVPN: one L2 VNI (VLAN) in a VRF with its L3
    VNI; every leaf is its anycast gateway; leaves of a boot network relay DHCP to the boot servers."""

    network: str  # inband | frontend | storage
    fabric: str
    vrf: str
    vlan: int
    vni: int  # L2 VNI of the VLAN
    l3vni: int  # L3 VNI of the VRF (symmetric routing)
    prefixes: list[str]
    gateways: list[str]  # anycast gateway (VRR) address per prefix, with its length: 10.0.0.1/22
    leaves: list[str]
    dhcp_relay: list[str] = field(default_factory=list)  # servers the leaves relay to; empty: no relay


@dataclass(slots=True)
class Cable:
    fabric: str
    a_device: str
    a_port: str
    b_device: str
    b_port: str
    media: str  # e.g. osfp-400g, osfp-800g, qsfp-100g, rj45-1g
    length_class: str  # in-rack | in-row | cross-row | cross-hall


@dataclass(slots=True)
class Fixture:
    """Rack equipment with no address of its own (an NVL72 power shelf): shown and given U, not managed."""

    name: str
    kind: str  # power_shelf
    model: str
    u: int
    height_u: int


@dataclass(slots=True)
class Rack:
    name: str
    hall: str
    row: str
    position: int
    height_u: int
    power_limit_kw: float
    power_kw: float  # everything in the rack: nodes (or the NVL72 rack figure) plus switches
    cooling: str
    nodes: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    switch_power_kw: float = 0.0  # the switches' share of power_kw
    switches: list[str] = field(default_factory=list)  # switches placed in this rack
    fixtures: list[Fixture] = field(default_factory=list)


@dataclass(slots=True)
class Hall:
    name: str
    power_limit_kw: float
    power_kw: float  # its racks plus switches the plan could not place in a rack
    cooling: str
    racks: list[str] = field(default_factory=list)
    switch_power_kw: float = 0.0  # the switches' share of power_kw


@dataclass(slots=True)
class NvlinkDomain:
    """An NVL72 rack: one NVLink domain, whose IMEX domain is its compute trays."""

    name: str
    rack: str
    nodes: list[str]
    switch_trays: list[str]
    imex_addresses: list[str]


@dataclass(slots=True)
class Pool:
    network: str
    prefixes: list[str]
    used: int
    free: int


@dataclass(slots=True)
class Fabric:
    name: str  # compute | frontend | storage | inband | oob
    kind: str  # infiniband | ethernet
    rate_gbps: int
    rail_optimized: bool
    su_size: int | None
    leaves: int
    spines: int
    cores: int = 0  # third tier, when two tiers of the switch radix cannot hold the leaves


@dataclass(slots=True)
class SiteInfo:
    name: str
    provider: str
    region: str
    data_residency: str
    stack: str
    has_slurm: bool


@dataclass(slots=True)
class Plan:
    site: SiteInfo
    halls: list[Hall]
    racks: list[Rack]
    nodes: list[Node]
    devices: list[Device]
    switches: list[Switch]
    cables: list[Cable]
    fabrics: list[Fabric]
    pools: list[Pool]
    nvlink_domains: list[NvlinkDomain]
    segments: list[Segment] = field(default_factory=list)
    boot_servers: list[str] = field(default_factory=list)  # boot/DNS/HTTP servers (in-band addresses)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def su_power_kw(self, su: int) -> float:
        """Power of one compute-fabric SU: the racks of its nodes (with their in-rack switches), its
        leaves, and an even share of the switches no SU owns (spines, cores, Ethernet fabrics)."""
        racks = {n.rack for n in self.nodes if n.su == su}
        sus = {n.su for n in self.nodes if n.su is not None}
        own = sum(r.power_kw for r in self.racks if r.name in racks)
        in_racks = {s for r in self.racks if r.name in racks for s in r.switches}
        leaves = sum(s.power_kw for s in self.switches if s.su == su and s.name not in in_racks)
        shared = sum(s.power_kw for s in self.switches if s.su is None and s.fabric != "oob")
        return round(own + leaves + shared / max(len(sus), 1), 3)

    @property
    def gpu_count(self) -> int:
        return sum(n.expected.gpu_count for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["totals"] = {
            "halls": len(self.halls),
            "racks": len(self.racks),
            "nodes": len(self.nodes),
            "gpus": self.gpu_count,
            "switches": len(self.switches),
            "cables": len(self.cables),
            "power_kw": round(sum(h.power_kw for h in self.halls), 3),
        }
        return data
