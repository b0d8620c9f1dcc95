"""The typed site model: what engineers write under `gpudc:` in a Pulumi stack file.

Field names are the YAML keys. Structural rules live here (pydantic); rules that need
the catalog or the expansion (power, ports, pools) live in `gpudc.model.rules` and
`gpudc.plan.expand`. Every error names its YAML path.
"""

from __future__ import annotations

import ipaddress
import re
import string
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
NAME_FIELDS = frozenset({"site", "hall", "row", "rack", "pool", "index", "slot", "position"})
#: The OS names are the catalog's os/ entries (one list): the plan checks a site's OS against them.
OS_DESCRIPTION = "An OS of the catalog: the name of a file in its os/ folder (ubuntu2404: os/ubuntu2404.yaml)"


def check_label(value: str) -> str:
    """An RFC 1123 label: lowercase letters, digits and inner hyphens, at most 63 characters.

    Names land in hostnames, file names, templates and shell commands; this rule is what
    makes injection impossible, so nothing else is allowed.
    """
    if not isinstance(value, str) or not _LABEL.match(value):
        raise ValueError(
            f"{value!r} is not an RFC 1123 name (lowercase a-z, 0-9 and inner '-', 1-63 characters)"
        )
    return value


Label = Annotated[str, AfterValidator(check_label)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


class SiteSpec(_Spec):
    name: Label
    provider: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9 ._-]+$")
    region: Label
    data_residency: Label = Field(description="Jurisdiction the site's data must stay in, e.g. jp")
    os: Label = Field(default="ubuntu2404", description=OS_DESCRIPTION)
    domain: str = Field(default="", description="DNS domain of the site; default <name>.gpudc.internal")

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        for label in filter(None, value.split(".")):
            check_label(label)
        return value


class RowSpec(_Spec):
    name: Label
    racks: int = Field(ge=1, le=500)
    rack_units: int = Field(default=48, ge=20, le=60)
    rack_power_kw: float | None = Field(default=None, gt=0, description="Overrides the hall's per-rack limit")


class HallSpec(_Spec):
    name: Label
    power_kw: float = Field(gt=0, description="Power envelope of the room")
    cooling: Literal["air", "liquid"]
    rack_power_kw: float = Field(gt=0, description="Per-rack power limit (PDU or cooling)")
    reserved_u: int = Field(default=2, ge=0, le=10, description="Rack units kept for TOR/OOB switches")
    rows: list[RowSpec] = Field(min_length=1)


class PoolSpec(_Spec):
    name: Label
    sku: str
    profile: str
    hall: Label
    count: int | None = Field(default=None, ge=1, description="Nodes, for node SKUs (HGX)")
    racks: int | None = Field(default=None, ge=1, description="Racks, for rack-scale SKUs (NVL72)")
    trays_per_rack: int | None = Field(
        default=None, ge=1, description="Populated compute trays per rack (rack SKUs; default: all)"
    )
    nodes_per_rack: int | None = Field(default=None, ge=1, description="Cap on nodes per rack (node SKUs)")
    os: Label | None = Field(default=None, description=f"{OS_DESCRIPTION}; default: the site's")
    slurm_partition: Label | None = None

    @model_validator(mode="after")
    def _count_or_racks(self) -> PoolSpec:
        if (self.count is None) == (self.racks is None):
            raise ValueError("give exactly one of 'count' (node SKUs) or 'racks' (rack-scale SKUs)")
        return self


class ComputeFabricSpec(_Spec):
    kind: Literal["infiniband", "roce"]
    rate_gbps: Literal[400, 800]
    rail_optimized: bool = True
    su_size: int = Field(default=32, ge=1, le=1024, description="Nodes per scalable unit")
    leaf: str
    spine: str


class EthernetFabricSpec(_Spec):
    leaf: str
    spine: str | None = None
    rate_gbps: int = Field(default=100, ge=1)
    downlinks: int | None = Field(
        default=None, ge=1,
        description="Node-facing ports per leaf (at most the leaf's radix; below it when a spine is set, "
        "as the uplinks take the rest). Default: half the radix (non-blocking); the leaves take as many "
        "uplinks as downlinks, at most the ports left",
    )
    mtu: int = Field(default=9216, ge=1280, le=9216)
    homing: Literal["single", "dual"] | None = Field(
        default=None,
        description="In-band fabric only: 'dual' cables each node's two north-south ports to a leaf pair as one "
        "EVPN multihoming bond, 'single' one port to one leaf. Default: each node as its SKU's reference "
        "architecture says (catalog network/conventions.yaml ethernet_design)",
    )
    storage: Literal["converged", "separate"] | None = Field(
        default=None,
        description="In-band fabric only: 'converged' carries the storage network on the in-band fabric (no "
        "storage fabric), 'separate' on its own fabric. Default: as the site's SKUs' reference architecture says",
    )


class OobFabricSpec(_Spec):
    switch: str = "sn2201"


class FabricsSpec(_Spec):
    compute: ComputeFabricSpec | None = None
    frontend: EthernetFabricSpec | None = None
    storage: EthernetFabricSpec | None = None
    inband: EthernetFabricSpec | None = None
    oob: OobFabricSpec = OobFabricSpec()


NETWORK_NAMES = ("oob", "inband", "frontend", "storage", "compute", "loopback")


class NetworkSpec(_Spec):
    prefixes: list[str] = Field(min_length=1)
    reserve: int = Field(default=10, ge=0, description="Addresses kept at the start of each prefix (gateways)")
    vlan: int | None = Field(default=None, ge=1, le=4094)

    @field_validator("prefixes")
    @classmethod
    def _prefixes(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                net = ipaddress.IPv4Network(value, strict=True)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not an IPv4 prefix: {exc}") from None
            if net.prefixlen > 30:
                raise ValueError(f"{value!r}: prefixes longer than /30 hold no hosts")
        return values

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"prefixes": [data]}
        if isinstance(data, list):
            return {"prefixes": data}
        return data


class NetworksSpec(_Spec):
    oob: NetworkSpec
    inband: NetworkSpec
    frontend: NetworkSpec | None = None
    storage: NetworkSpec | None = None
    compute: NetworkSpec | None = None
    loopback: NetworkSpec | None = Field(
        default=None,
        description="Loopbacks (/32) of the Ethernet fabrics' leaves and spines: BGP router-id and VXLAN "
        "tunnel source; needed by a site with a frontend, storage or inband fabric",
    )
    boot_servers: list[ipaddress.IPv4Address] = Field(
        default_factory=list,
        description="Addresses of the boot/DNS/HTTP servers (Kea, TFTP, HTTP, DNS) in the in-band network; "
        "leaves relay DHCP to them. Default: one planned address at the top of the in-band reserve",
    )


class NamingSpec(_Spec):
    rack: str = Field(default="{hall}-{row}{position:02d}")
    node: str = Field(default="{rack}-n{slot:02d}")

    @field_validator("rack", "node")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a name pattern: {exc}") from None
        unknown = sorted(set(fields) - NAME_FIELDS)
        if unknown or any(not f for f in fields):
            raise ValueError(
                f"{value!r} uses unknown fields {unknown or ['(positional)']}; allowed: {sorted(NAME_FIELDS)}"
            )
        literal = "".join(lit for lit, _, _, _ in string.Formatter().parse(value))
        if not re.fullmatch(r"[a-z0-9-]*", literal):
            raise ValueError(f"{value!r}: literal text may only hold a-z, 0-9 and '-'")
        return value


#: Slurm releases gpudc renders for (YY.MM): 22.05 is Debian 12's; topology/block came in 23.11.
SLURM_VERSION = re.compile(r"^(2[0-9])\.(02|05|11)$")


class SlurmSpec(_Spec):
    enabled: bool = True
    cluster_name: Label
    controller: Label
    version: str = Field(
        default="23.11",
        description="Slurm release the site runs (YY.MM, e.g. 22.05, 23.11, 24.05); the rendered files follow "
        "it: topology/tree before 23.11, topology/block (one block per NVL72 domain) from 23.11",
    )
    controller_address: ipaddress.IPv4Address | None = Field(
        default=None, description="Address nodes reach slurmctld on (SlurmctldHost=controller(address))"
    )
    client: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9@/._:=-]+( [A-Za-z0-9@/._:=-]+)*$",
        description="Command prefix gpudc puts before scontrol/squeue to reach this cluster's slurmctld, e.g. "
        "`ssh root@slurmctld-01`; default: the clients on PATH with their own slurm.conf",
    )
    health_check_interval: int = Field(
        default=300, ge=5, le=86400, description="Seconds between runs of gpudc-probe as HealthCheckProgram"
    )
    probe_in_prolog: bool = Field(default=False, description="Also run gpudc-probe (quick) as the job Prolog")
    gres_autodetect: Literal["nvml", "off"] = Field(
        default="nvml", description="gres.conf AutoDetect: nvml needs slurmd's gpu/nvml plugin (Debian lacks it)"
    )
    cgroup: bool = Field(
        default=True,
        description="proctrack/cgroup + task/cgroup (production); false: proctrack/linuxproc (containers)",
    )

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not SLURM_VERSION.match(value):
            raise ValueError(f"{value!r} is not a Slurm release (YY.MM: 22.05, 23.02, 23.11, 24.05, 24.11...)")
        return value

    def version_tuple(self) -> tuple[int, int]:
        major, minor = self.version.split(".")
        return int(major), int(minor)


class MacsSpec(_Spec):
    boot: str | None = None
    bmc: str | None = None
    inband: list[str] = Field(
        default_factory=list, max_length=2,
        description="MACs of a dual-homed node's two in-band ports, in cabling order (the bond's members); the "
        "boot MAC is one of them and defaults to the first",
    )

    @field_validator("boot", "bmc")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        if value is not None and not _MAC.match(value):
            raise ValueError(f"{value!r} is not a MAC address (aa:bb:cc:dd:ee:ff, lowercase)")
        return value

    @field_validator("inband")
    @classmethod
    def _macs(cls, value: list[str]) -> list[str]:
        for mac in value:
            cls._mac(mac)
        if len(set(value)) != len(value):
            raise ValueError("the two in-band ports have the same MAC")
        return value

    @model_validator(mode="after")
    def _boot_is_a_port(self) -> MacsSpec:
        if self.boot is not None and self.inband and self.boot not in self.inband:
            raise ValueError(f"boot MAC {self.boot} is none of the in-band ports' MACs {self.inband}")
        return self

    @property
    def boot_port(self) -> str | None:
        return self.boot or (self.inband[0] if self.inband else None)


class SshAccessSpec(_Spec):
    user: str = Field(default="root", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    port: int = Field(default=22, ge=1, le=65535)
    jump: str | None = Field(
        default=None, pattern=r"^([a-z_][a-z0-9_-]*@)?[A-Za-z0-9.-]+(:[0-9]{1,5})?$",
        description="Jump host [user@]host[:port] between the controller and the nodes",
    )


class AccessSpec(_Spec):
    """How the controller reaches the site's nodes (gpudc.access); BMCs: the `infra:` namespace."""

    ssh: SshAccessSpec = SshAccessSpec()
    file: str | None = Field(
        default=None,
        description="A JSON document that states node addresses, SSH identity/known_hosts, BMC endpoints and "
        "credentials file, and provisioning variables, over the defaults (the lab writes one; so can a CMDB export)",
    )


class SecretValue(_Spec):
    secure: str = Field(min_length=1)


class Site(_Spec):
    """The `gpudc:` namespace of a stack file."""

    site: SiteSpec
    halls: list[HallSpec] = Field(min_length=1)
    pools: list[PoolSpec] = Field(min_length=1)
    fabrics: FabricsSpec = FabricsSpec()
    networks: NetworksSpec
    naming: NamingSpec = NamingSpec()
    slurm: SlurmSpec | None = None
    macs: dict[Label, MacsSpec] = Field(default_factory=dict, description="Known MACs by node name")
    access: AccessSpec = AccessSpec()
    bmcUser: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,32}$")
    bmcPassword: SecretValue | None = None

    @field_validator("bmcPassword", mode="before")
    @classmethod
    def _password_is_secret(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                "must be a Pulumi secret, not plain text: pulumi config set --secret gpudc:bmcPassword ..."
            )
        return value
