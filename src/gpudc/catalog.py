"""The catalog: hardware SKUs, switch models and software profiles, as data with sources.

Code asks the catalog; it never carries a hardware or version fact as a constant.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from gpudc import PROJECT_ROOT
from gpudc.errors import InputError

OS_NAMES = ("ubuntu2204", "ubuntu2404", "debian12")
#: Roles whose packages a profile pins, in install order.
PACKAGE_ROLES = (
    "driver",
    "fabric_manager",
    "nvlsm",
    "imex",
    "cuda_toolkit",
    "nccl",
    "dcgm",
    "rdma",
    "container_toolkit",
)


def catalog_dir() -> Path:
    return Path(os.environ.get("GPUDC_CATALOG", PROJECT_ROOT / "catalog"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Fact(_Strict):
    value: Any
    source: str


class Sku(_Strict):
    name: str
    kind: Literal["node", "rack"]
    description: str
    facts: dict[str, Fact]

    def fact(self, key: str) -> Any:
        return self.facts[key].value

    @property
    def is_rack(self) -> bool:
        return self.kind == "rack"

    @property
    def gpus_per_node(self) -> int:
        return int(self.fact("gpus"))

    @property
    def node_power_kw(self) -> float:
        if self.is_rack:
            return float(self.fact("rack_power_kw")) / int(self.fact("compute_trays"))
        return float(self.fact("power_kw"))

    @property
    def node_units(self) -> int:
        return int(self.fact("tray_rack_units") if self.is_rack else self.fact("rack_units"))


class SwitchModel(_Strict):
    description: str
    kind: Literal["infiniband", "ethernet"]
    ports: Fact
    rate_gbps: Fact
    rack_units: Fact


class Package(_Strict):
    name: str
    version: str


class OsPackages(_Strict):
    packages: dict[str, list[Package]]


class Component(_Strict):
    version: str
    source: str
    branch: str | None = None
    kernel_module: Literal["open", "proprietary"] | None = None
    toolkit: str | None = None
    major: int | None = None
    mode: str | None = None


class Profile(_Strict):
    name: str
    release: str
    description: str
    supports: list[str]
    components: dict[str, Component]
    os: dict[str, OsPackages]

    @property
    def driver(self) -> Component:
        return self.components["driver"]

    def packages_for(self, os_name: str, roles: tuple[str, ...] | list[str]) -> dict[str, str]:
        """Package -> version for the given roles on one OS, in role order."""
        table = self.os[os_name].packages
        return {p.name: p.version for role in roles for p in table.get(role, [])}


class Catalog(_Strict):
    skus: dict[str, Sku]
    switches: dict[str, SwitchModel]
    profiles: dict[str, Profile]


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _read(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(str(exc).splitlines()[0], source=str(path)) from None


def _parse(model: type[BaseModel], data: Any, path: Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise InputError(problems, source=str(path)) from None


@cache
def load_catalog(root: Path | None = None) -> Catalog:
    root = root or catalog_dir()
    skus: dict[str, Sku] = {}
    for path in sorted((root / "hardware").glob("*.yaml")):
        if path.name == "switches.yaml":
            continue
        sku = _parse(Sku, _read(path), path)
        skus[sku.name] = sku
    switch_data = _read(root / "hardware" / "switches.yaml") or {}
    switches = {
        name: _parse(SwitchModel, body, root / "hardware" / "switches.yaml")
        for name, body in (switch_data.get("switches") or {}).items()
    }
    profiles: dict[str, Profile] = {}
    for path in sorted((root / "software").glob("*.yaml")):
        profile = _parse(Profile, _read(path), path)
        profiles[profile.name] = profile
    return Catalog(skus=skus, switches=switches, profiles=profiles)


@cache
def network_conventions(root: Path | None = None) -> dict[str, Any]:
    """Values of catalog/network/conventions.yaml (ASN plan, default VLANs, MTU, VRR MAC)."""
    path = (root or catalog_dir()) / "network" / "conventions.yaml"
    data = _read(path) or {}
    facts = {key: _parse(Fact, body, path) for key, body in data.items()}
    return {key: fact.value for key, fact in facts.items()}


def profile_problem(profile: Profile, sku: Sku) -> str | None:
    """Why a profile cannot drive a SKU, or None when it can."""
    if sku.name not in profile.supports:
        return f"profile {profile.name!r} does not list SKU {sku.name!r} (supports: {', '.join(profile.supports)})"
    minimum = str(sku.fact("driver_min"))
    if version_tuple(profile.driver.version) < version_tuple(minimum):
        return (
            f"profile {profile.name!r} pins driver {profile.driver.version}, older than {minimum}, "
            f"the first driver that supports {sku.name}"
        )
    if sku.fact("open_module_required") and profile.driver.kernel_module != "open":
        return f"profile {profile.name!r} uses the proprietary kernel module; {sku.name} needs the open one"
    return None
