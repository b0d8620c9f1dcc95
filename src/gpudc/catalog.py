"""The catalog: hardware SKUs, switch models and software profiles, as data with sources.

Code asks the catalog; it never carries a hardware or version fact as a constant.

The catalog gpudc ships (`gpudc.resources.shipped("catalog")`) is merged with the current site
project's overlay (`<project>/catalog/`, same layout): an overlay entry with a shipped entry's
name replaces it whole, any other adds to it. Every overlay entry carries a top-level
`source:`. `Catalog.origins` says where each entry came from (`gpudc catalog show`).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from gpudc.errors import InputError
from gpudc.resources import shipped

if TYPE_CHECKING:
    from gpudc.project import Project

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
#: The folders of a catalog (shipped or overlay) and what each holds.
CATALOG_FOLDERS = {
    "hardware": "SKUs (one file each) and switches.yaml",
    "software": "software profiles (one file each)",
    "validation": "xid.yaml and thresholds.yaml",
    "network": "conventions.yaml",
    "os": "operating systems (one file each)",
}

#: Facts every SKU must carry, by kind, and the type each value must have; the plan, the
#: renderers and the validator read these, so a missing one is a catalog error at load time.
_NUMBER = (int, float)
_COMMON_FACTS: dict[str, tuple[type, ...]] = {
    "gpus": (int,),
    "gpu_model": (str,),
    "gpu_arch": (str,),
    "cooling": (str,),
    "compute_nics": (int,),
    "compute_nic_rate_gbps": _NUMBER,
    "storage_nics": (int,),
    "storage_nic_rate_gbps": _NUMBER,
    "frontend_nic_rate_gbps": _NUMBER,
    "inband_nic_rate_gbps": _NUMBER,
    "pcie_gen": (int, type(None)),
    "pcie_width": (int, type(None)),
    "nvlink_links_per_gpu": (int,),
    "fabric_manager": (bool,),
    "nvlsm": (bool,),
    "imex": (bool,),
    "multi_node_nvlink": (bool,),
    "driver_min": (str,),
    "open_module_required": (bool,),
    "max_temp_c": _NUMBER,
}
REQUIRED_FACTS: dict[str, dict[str, tuple[type, ...]]] = {
    "node": {**_COMMON_FACTS, "power_kw": _NUMBER, "rack_units": (int,)},
    "rack": {
        **_COMMON_FACTS,
        "compute_trays": (int,),
        "switch_trays": (int,),
        "rack_power_kw": _NUMBER,
        "tray_rack_units": (int,),
        "switch_tray_rack_units": (int,),
        "tray_u_start": (int,),
    },
}


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
    source: str | None = None  # required in a project overlay (its facts carry their own too)

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


def sku_fact_problems(sku: Sku) -> list[str]:
    """What is missing or mistyped among the facts every SKU of its kind must carry."""
    problems = []
    for key, types in REQUIRED_FACTS[sku.kind].items():
        fact = sku.facts.get(key)
        if fact is None:
            problems.append(f"facts.{key}: required for a {sku.kind} SKU, missing")
        elif not isinstance(fact.value, types) or (bool not in types and isinstance(fact.value, bool)):
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            problems.append(f"facts.{key}: {fact.value!r} is not {wanted}")
    return problems


class SwitchModel(_Strict):
    description: str
    kind: Literal["infiniband", "ethernet"]
    ports: Fact
    rate_gbps: Fact
    rack_units: Fact
    # Typical power in watts (datasheet, passive cables), the figure the plan counts per switch.
    # Optional so older overlays load; the plan refuses to place a model without it.
    power_w: Fact | None = None
    source: str | None = None  # required in a project overlay


class Package(_Strict):
    name: str
    version: str
    # Relationships as the repository's Packages index has them, where gpudc relies on them (the
    # lab's stand-ins are built with exactly these); `source` says where they were read. Unset
    # fields stay out of the profile document, so older profiles keep their digests.
    depends: list[str] | None = None
    provides: list[str] | None = None
    conflicts: list[str] | None = None
    replaces: list[str] | None = None
    source: str | None = None


#: The repository source a package set comes from unless it says otherwise: NVIDIA's CUDA
#: repository. The others (Ubuntu's own archive) are named in software/naming.yaml.
DEFAULT_REPOSITORY = "cuda"


class OsPackages(_Strict):
    packages: dict[str, list[Package]]
    repository: str | None = None  # the source it is listed under; None: NVIDIA's CUDA repository
    source: str | None = None  # where this set's names and versions come from


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
    os: dict[str, OsPackages]  # OS -> the package set from NVIDIA's CUDA repository (the default)
    #: Other repository sources' sets: repository ("ubuntu") -> OS -> set. Absent: CUDA repository only.
    repositories: dict[str, dict[str, OsPackages]] | None = None
    source: str | None = None  # required in a project overlay (its components carry their own too)

    @property
    def driver(self) -> Component:
        return self.components["driver"]

    def package_set(self, os_name: str, repository: str = DEFAULT_REPOSITORY) -> OsPackages:
        """One OS's package set from one repository source (KeyError when the profile has none)."""
        if repository == DEFAULT_REPOSITORY:
            return self.os[os_name]
        return (self.repositories or {})[repository][os_name]

    def packages_for(
        self, os_name: str, roles: tuple[str, ...] | list[str], repository: str = DEFAULT_REPOSITORY
    ) -> dict[str, str]:
        """Package -> version for the given roles on one OS, in role order."""
        table = self.package_set(os_name, repository).packages
        return {p.name: p.version for role in roles for p in table.get(role, [])}


#: software/<this file> holds the repositories' naming rule, not a profile.
NAMING_FILE = "naming.yaml"


class RepositoryNaming(_Strict):
    description: str
    #: First driver branch whose driver-versioned packages this repository names without the
    #: branch suffix (None: it always keeps `<stem>-<branch>`).
    unversioned_from_branch: Fact


class PackageNaming(_Strict):
    """How each repository source names the driver-versioned packages (software/naming.yaml)."""

    stems: Fact  # names without a branch suffix
    repositories: dict[str, RepositoryNaming]

    def name(self, stem: str, branch: int, repository: str = DEFAULT_REPOSITORY) -> str:
        """The name a repository gives one driver-versioned package of a driver branch."""
        first = self.repositories[repository].unversioned_from_branch.value
        return stem if first is not None and branch >= int(first) else f"{stem}-{branch}"

    def stem_of(self, name: str) -> str | None:
        for stem in sorted(self.stems.value, key=len, reverse=True):  # -dev before its runtime
            if re.fullmatch(rf"{re.escape(stem)}(-\d+)?", name):
                return str(stem)
        return None


@cache
def load_package_naming(root: Path | None = None, overlay: Path | None = None) -> PackageNaming:
    """software/naming.yaml of the catalog at `root` (default: shipped), an overlay's replacing it."""
    path = (root or shipped_catalog_dir()) / "software" / NAMING_FILE
    if overlay is not None and (overlay / "software" / NAMING_FILE).exists():
        path = overlay / "software" / NAMING_FILE
    naming: PackageNaming = _parse(PackageNaming, _read(path), path)
    return naming


def profile_package_problems(profile: Profile, naming: PackageNaming) -> list[str]:
    """Driver-versioned packages a profile names otherwise than its repository does (with their paths)."""
    problems = [f"repositories.{r}: unknown repository source (the catalog's naming knows: "
                f"{', '.join(sorted(naming.repositories))})"
                for r in profile.repositories or {} if r not in naming.repositories]
    branch = profile.driver.branch
    if problems or branch is None or not branch.isdigit():
        return problems
    sets = [(f"os.{os_name}", DEFAULT_REPOSITORY, table) for os_name, table in profile.os.items()]
    for repository, tables in (profile.repositories or {}).items():
        sets += [(f"repositories.{repository}.{os_name}", repository, t) for os_name, t in tables.items()]
    for where, repository, table in sets:
        if table.repository not in (None, repository):
            problems.append(f"{where}.repository: {table.repository!r}, but the set is listed under {repository!r}")
        for role, packages in table.packages.items():
            for i, package in enumerate(packages):
                stem = naming.stem_of(package.name)
                if stem is None:
                    continue
                want = naming.name(stem, int(branch), repository)
                if package.name != want:
                    problems.append(
                        f"{where}.packages.{role}[{i}].name: {package.name!r}, but the {repository} "
                        f"repository names branch {branch}'s package {want!r}"
                    )
    return problems


class Catalog(_Strict):
    skus: dict[str, Sku]
    switches: dict[str, SwitchModel]
    profiles: dict[str, Profile]
    #: "<kind>:<name>" (sku, switch, profile) -> the file it came from ("gpudc:..." when shipped)
    origins: dict[str, str] = {}


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _read(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(str(exc).splitlines()[0], source=str(path)) from None


def _parse(model: type[BaseModel], data: Any, path: Path, where: str = "") -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{where}{'.'.join(str(p) for p in e['loc'])}: {'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}"
            for e in exc.errors()
        ]
        raise InputError(problems, source=str(path)) from None


def shipped_catalog_dir() -> Path:
    return shipped("catalog")


def overlay_dir(project: Project | None = None) -> Path | None:
    """A project's catalog overlay (default: the current project's), if it has one.

    None also for gpudc's own checkout, whose catalog/ is the shipped catalog itself.
    """
    from gpudc.project import current_project

    project = project or current_project()
    if project is None or not project.catalog_overlay.is_dir():
        return None
    if project.catalog_overlay.resolve() == shipped_catalog_dir().resolve():
        return None  # gpudc's own checkout: its catalog/ is what ships
    return project.catalog_overlay


def origin_label(path: Path, root: Path, overlay: bool) -> str:
    return str(path) if overlay else f"gpudc:catalog/{path.relative_to(root)}"


def _layers(overlay: Path | None) -> list[tuple[Path, bool]]:
    layers = [(shipped_catalog_dir(), False)]
    if overlay is not None:
        _check_overlay_layout(overlay)
        layers.append((overlay, True))
    return layers


def _check_overlay_layout(root: Path) -> None:
    problems = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or (entry.is_file() and entry.suffix.lower() in (".md", ".txt")):
            continue
        if not entry.is_dir() or entry.name not in CATALOG_FOLDERS:
            known = ", ".join(f"{k}/ ({v})" for k, v in CATALOG_FOLDERS.items())
            problems.append(f"{entry.name}: not a catalog folder; a catalog holds {known}")
    if problems:
        raise InputError(problems, source=str(root))


def _need_source(entry: BaseModel, path: Path, where: str) -> None:
    if not getattr(entry, "source", None):
        raise InputError(f"{where}source: an overlay entry must say where its facts come from", source=str(path))


def current_catalog(project: Project | None = None) -> Catalog:
    """The merged catalog of a project (default: the current one): shipped + its overlay."""
    return load_catalog(overlay=overlay_dir(project))


@cache
def load_catalog(root: Path | None = None, overlay: Path | None = None) -> Catalog:
    """The catalog at `root` (default: the shipped one) with an overlay folder merged over it."""
    layers = [(root or shipped_catalog_dir(), False)]
    if overlay is not None:
        _check_overlay_layout(overlay)
        layers.append((overlay, True))
    skus: dict[str, Sku] = {}
    switches: dict[str, SwitchModel] = {}
    profiles: dict[str, Profile] = {}
    origins: dict[str, str] = {}
    naming = load_package_naming(root, overlay)
    for base, is_overlay in layers:
        for path in sorted((base / "hardware").glob("*.yaml")):
            if path.name == "switches.yaml":
                continue
            sku = _parse(Sku, _read(path), path)
            if is_overlay:
                _need_source(sku, path, "")
            problems = sku_fact_problems(sku)
            if problems:
                raise InputError(problems, source=str(path))
            skus[sku.name] = sku
            origins[f"sku:{sku.name}"] = origin_label(path, base, is_overlay)
        switch_path = base / "hardware" / "switches.yaml"
        if switch_path.exists() or not is_overlay:
            switch_data = _read(switch_path) or {}
            if not isinstance(switch_data, dict):
                raise InputError("expected a mapping with `switches:`", source=str(switch_path))
            for name, body in (switch_data.get("switches") or {}).items():
                model = _parse(SwitchModel, body, switch_path, f"switches.{name}.")
                if is_overlay:
                    _need_source(model, switch_path, f"switches.{name}.")
                switches[str(name)] = model
                origins[f"switch:{name}"] = origin_label(switch_path, base, is_overlay)
        for path in sorted((base / "software").glob("*.yaml")):
            if path.name == NAMING_FILE:
                continue
            profile = _parse(Profile, _read(path), path)
            if is_overlay:
                _need_source(profile, path, "")
            problems = profile_package_problems(profile, naming)
            if problems:
                raise InputError(problems, source=str(path))
            profiles[profile.name] = profile
            origins[f"profile:{profile.name}"] = origin_label(path, base, is_overlay)
    return Catalog(skus=skus, switches=switches, profiles=profiles, origins=origins)


def network_conventions() -> dict[str, Any]:
    """Values of network/conventions.yaml (ASN plan, default VLANs, MTU, VRR MAC), overlay merged."""
    return _network_conventions(overlay_dir())


@cache
def _network_conventions(overlay: Path | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for base, _ in _layers(overlay):
        path = base / "network" / "conventions.yaml"
        if not path.exists() and base != shipped_catalog_dir():
            continue
        data = _read(path) or {}
        if not isinstance(data, dict):
            raise InputError("expected a mapping of name: {value, source}", source=str(path))
        values.update({key: _parse(Fact, body, path, f"{key}.").value for key, body in data.items()})
    return values


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


# --------------------------------------------------------------------------- operating systems
# catalog/os/: one file per OS a node can run (how it installs over the network, per CPU
# architecture) and architectures.yaml (what each architecture's UEFI firmware needs from DHCP).
# These entries are the one list of OS names: the plan rejects a site whose OS is not here.

#: Installer kinds the PXE templates know how to drive (templates/pxe): what the code supports.
INSTALLERS = ("autoinstall", "preseed")
_ARCHITECTURES = "architectures.yaml"


class OsImage(_Strict):
    """One OS's network installer for one CPU architecture, as the boot server serves it."""

    path: Fact  # folder on the boot server, relative to the site's boot URL
    kernel: Fact  # file names in that folder
    initrd: Fact
    iso: Fact | None = None  # the live ISO the installer fetches (Ubuntu's url=), none for netboot


class OsRelease(_Strict):
    name: str
    description: str
    family: Fact  # ubuntu | debian
    release: Fact  # codename: noble, jammy, bookworm
    installer: Fact  # one of INSTALLERS
    mirror: Fact | None = None  # package mirror the installer uses (preseed)
    images: dict[str, OsImage]  # CPU architecture -> installer files
    source: str | None = None  # required in a project overlay (its facts carry their own too)


class CpuArch(_Strict):
    description: str
    uefi_client_arch: Fact  # DHCP option 93 value the firmware sends
    ipxe: Fact  # iPXE binary the DHCP server hands that firmware
    # every option 93 value this CPU's firmware may send: name -> {client_arch, boot: tftp | http}
    firmware: dict[str, Fact] = {}
    source: str | None = None  # required in a project overlay


class OsCatalog(_Strict):
    releases: dict[str, OsRelease]
    architectures: dict[str, CpuArch]
    #: "os:<name>" / "arch:<name>" -> the file it came from ("gpudc:..." when shipped)
    origins: dict[str, str] = {}

    @property
    def names(self) -> list[str]:
        return sorted(self.releases)


def _os_problems(release: OsRelease, architectures: dict[str, CpuArch]) -> list[str]:
    problems = []
    if release.installer.value not in INSTALLERS:
        problems.append(f"installer.value: {release.installer.value!r} is not one of {', '.join(INSTALLERS)}")
    for arch, image in release.images.items():
        if arch not in architectures:
            problems.append(f"images.{arch}: unknown CPU architecture (os/{_ARCHITECTURES} has: "
                            f"{', '.join(sorted(architectures))})")
        if release.installer.value == "autoinstall" and image.iso is None:
            problems.append(f"images.{arch}.iso: an autoinstall image needs the live ISO it installs from")
    if release.installer.value == "preseed" and release.mirror is None:
        problems.append("mirror: a preseed installer needs the package mirror it installs from")
    return problems


@cache
def load_os_catalog(root: Path | None = None, overlay: Path | None = None) -> OsCatalog:
    """The OS entries of the catalog at `root` (default: the shipped one), an overlay merged over it."""
    from gpudc.resources import shipped

    layers = [(root or shipped("catalog"), False)]
    if overlay is not None:
        layers.append((overlay, True))
    releases: dict[str, OsRelease] = {}
    architectures: dict[str, CpuArch] = {}
    files: dict[str, Path] = {}
    origins: dict[str, str] = {}
    for base, is_overlay in layers:
        folder = base / "os"
        arch_path = folder / _ARCHITECTURES
        if arch_path.exists() or not is_overlay:
            data = _read(arch_path) or {}
            if not isinstance(data, dict):
                raise InputError("expected a mapping with `architectures:`", source=str(arch_path))
            for name, body in (data.get("architectures") or {}).items():
                arch = _parse(CpuArch, body, arch_path)
                if is_overlay and not arch.source:
                    raise InputError(f"architectures.{name}.source: an overlay entry must say where its facts "
                                     "come from", source=str(arch_path))
                architectures[str(name)] = arch
                origins[f"arch:{name}"] = origin_label(arch_path, base, is_overlay)
        for path in sorted(folder.glob("*.yaml")):
            if path.name == _ARCHITECTURES:
                continue
            release = _parse(OsRelease, _read(path), path)
            if is_overlay and not release.source:
                raise InputError("source: an overlay entry must say where its facts come from", source=str(path))
            releases[release.name] = release
            files[release.name] = path
            origins[f"os:{release.name}"] = origin_label(path, base, is_overlay)
    for name, release in releases.items():
        problems = _os_problems(release, architectures)
        if problems:
            raise InputError(problems, source=str(files[name]))
    return OsCatalog(releases=releases, architectures=architectures, origins=origins)


def current_os_catalog(project: Project | None = None) -> OsCatalog:
    """The OS entries of a project (default: the current one): shipped + its overlay."""
    return load_os_catalog(overlay=overlay_dir(project))
