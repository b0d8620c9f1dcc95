"""Stand-in .debs under NVIDIA's exact package names, versions and dependencies, for the lab.

NVIDIA's repositories are unreachable from the lab, so the lab serves a local apt repository of
packages built here with `dpkg-deb`: every package of every software profile's `debian12` set
that Debian itself does not provide (the `rdma` role's rdma-core/ibverbs-utils come from Debian
through the lab's apt-cacher-ng). Each installs a marker file
(`/usr/share/gpudc-standin/<name>`: "<name> <version>") and, where the real package has one, a
systemd unit running a harmless long-lived process that the roles enable:

- driver (`nvidia-open-<br>`, `cuda-drivers-<br>`): `nvidia-persistenced.service`
- `nvidia-fabricmanager[-<br>]`: `nvidia-fabricmanager.service`
- `nvidia-imex[-<br>]`: `nvidia-imex.service`, `/etc/nvidia-imex/config.cfg` and an
  `nvidia-imex-ctl` that answers `-q` with READY and `-N -j` with a domain status derived from
  `/etc/nvidia-imex/nodes_config.cfg`
- `datacenter-gpu-manager-4-core`: `nvidia-dcgm.service`

Control fields reproduce the real repository's relationships as the catalog records them, with
their sources (`Package.depends/provides/conflicts/replaces`): NVIDIA's `nvidia-fabricmanager-570`
provides, conflicts with and replaces `nvidia-fabricmanager`; from 580 the real package is
`nvidia-fabricmanager` and `nvidia-fabricmanager-580` is only a name it provides, so pinning
`nvidia-fabricmanager-580=<version>` fails against the stand-ins exactly as on a real node. Only
the driver stand-ins keep a lab-only virtual (`gpudc-standin-nvidia-driver`) so that two driver
branches never sit side by side. Dependencies on the OS's own packages (libc6, Canonical's
nvidia-kernel-common, ...) are left out: the stand-ins install nothing that needs them.
The driver stand-in ships no `libnvidia-ml.so.1` (the lab simulates NVML there) and no tools
(`nvidia-smi`, `dcgmi`) that the lab simulates.

`newer=True` builds the same packages at a higher version (`<version>+gpudc1`) so tests can show
that held packages survive an `apt-get upgrade`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpudc.catalog import Catalog, Package, current_catalog
from gpudc.errors import GpudcError

#: Package roles whose packages come from Debian itself in the inbox RDMA mode.
DEBIAN_ROLES = ("rdma",)
STANDIN_OS = "debian12"
NEWER_SUFFIX = "+gpudc1"
MARKER_DIR = "/usr/share/gpudc-standin"
#: Lab-only virtual name the driver stand-ins provide, conflict with and replace.
DRIVER_VIRTUAL = "gpudc-standin-nvidia-driver"

_SLEEPER = "#!/bin/sh\n# gpudc stand-in daemon: a harmless long-lived process.\nexec sleep infinity\n"

_IMEX_CTL = r'''#!/usr/bin/python3
"""gpudc stand-in for nvidia-imex-ctl: -q -> READY; -N [-j] -> domain status from nodes_config."""
import json, os, sys, time
CONFIG = os.environ.get("GPUDC_IMEX_NODES_CONFIG", "/etc/nvidia-imex/nodes_config.cfg")
VERSION = "@VERSION@"
def peers():
    try:
        lines = open(CONFIG).read().splitlines()
    except OSError:
        return None
    return [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]
args = sys.argv[1:]
nodes = peers()
if "-q" in args:
    print("READY" if nodes else "UNAVAILABLE")
    sys.exit(0 if nodes else 1)
if "-N" in args:
    if nodes is None:
        print("nvidia-imex-ctl: cannot read " + CONFIG, file=sys.stderr)
        sys.exit(1)
    status = {
        "timestamp": time.strftime("%m/%d/%Y %H:%M:%S.000"),
        "status": "UP" if nodes else "DOWN",
        "nodes": {
            str(i): {"index": i, "host": h, "status": "READY", "version": VERSION}
            for i, h in enumerate(nodes)
        },
    }
    if "-j" in args:
        print(json.dumps(status, indent=2))
    else:
        print("Domain State: " + status["status"])
        for i, h in enumerate(nodes):
            print("Node #%d - %s - READY - Version: %s" % (i, h, VERSION))
    sys.exit(0)
print("usage: nvidia-imex-ctl [-q] [-N [-j]]", file=sys.stderr)
sys.exit(2)
'''

_IMEX_CONFIG = """\
# nvidia-imex configuration (gpudc stand-in)
SERVER_PORT=50000
IMEX_NODE_CONFIG_FILE=/etc/nvidia-imex/nodes_config.cfg
"""


@dataclass(slots=True)
class StandinPackage:
    name: str
    version: str
    role: str
    depends: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    replaces: list[str] = field(default_factory=list)
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (content, mode)
    units: dict[str, str] = field(default_factory=dict)  # unit name -> ExecStart binary
    conffiles: list[str] = field(default_factory=list)


def _unit(description: str, exec_start: str) -> str:
    return textwrap.dedent(f"""\
        [Unit]
        Description={description} (gpudc stand-in)

        [Service]
        Type=simple
        ExecStart={exec_start}
        Restart=on-failure

        [Install]
        WantedBy=multi-user.target
        """)


def _upstream(version: str) -> str:
    """`580.95.05` from `580.95.05-1`, `4.5.2` from `1:4.5.2-1`."""
    return version.split(":", 1)[-1].rsplit("-", 1)[0]


def describe(
    name: str, version: str, role: str, siblings: dict[str, str], package: Package | None = None
) -> StandinPackage:
    """What the stand-in of one NVIDIA package contains; `package`: its catalog entry (relationships)."""
    pkg = StandinPackage(name=name, version=version, role=role)
    if package is not None:
        # The repository's own relationships, as the catalog records them (with their source).
        pkg.depends += package.depends or []
        pkg.provides += package.provides or []
        pkg.conflicts += package.conflicts or []
        pkg.replaces += package.replaces or []
    pkg.files[f"{MARKER_DIR}/{name}"] = (f"{name} {version}\n", 0o644)
    if role == "driver" and re.fullmatch(r"(nvidia-open|cuda-drivers)-\d+", name):
        # Lab-only: one driver branch at a time (the real packages' file conflicts do this on a node).
        for field_ in (pkg.provides, pkg.conflicts, pkg.replaces):
            field_.append(DRIVER_VIRTUAL)
        pkg.files["/usr/bin/nvidia-persistenced"] = (_SLEEPER, 0o755)
        pkg.units["nvidia-persistenced.service"] = _unit("NVIDIA Persistence Daemon", "/usr/bin/nvidia-persistenced")
    elif role == "fabric_manager" and re.fullmatch(r"nvidia-fabricmanager(-\d+)?", name):
        pkg.files["/usr/bin/nv-fabricmanager"] = (_SLEEPER, 0o755)
        pkg.units["nvidia-fabricmanager.service"] = _unit("NVIDIA fabric manager service", "/usr/bin/nv-fabricmanager")
    elif role == "imex" and re.fullmatch(r"nvidia-imex(-\d+)?", name):
        pkg.files["/usr/bin/nvidia-imex"] = (_SLEEPER, 0o755)
        pkg.files["/usr/bin/nvidia-imex-ctl"] = (_IMEX_CTL.replace("@VERSION@", _upstream(version)), 0o755)
        pkg.files["/etc/nvidia-imex/config.cfg"] = (_IMEX_CONFIG, 0o644)
        pkg.conffiles.append("/etc/nvidia-imex/config.cfg")
        pkg.units["nvidia-imex.service"] = _unit("NVIDIA IMEX service", "/usr/bin/nvidia-imex")
    elif role == "dcgm" and name.endswith("-core"):
        pkg.files["/usr/bin/nv-hostengine"] = (_SLEEPER, 0o755)
        pkg.units["nvidia-dcgm.service"] = _unit("NVIDIA DCGM service", "/usr/bin/nv-hostengine -n")
    elif role == "cuda_toolkit":
        toolkit = _upstream(version)
        short = ".".join(toolkit.split(".")[:2])
        pkg.files[f"/usr/local/cuda-{short}/version.json"] = (
            f'{{"cuda": {{"name": "CUDA SDK", "version": "{toolkit}"}}}}\n', 0o644)
    elif role == "container_toolkit" and name.endswith("-base"):
        pkg.files["/usr/bin/nvidia-ctk"] = (
            f"#!/bin/sh\necho 'NVIDIA Container Toolkit CLI version {_upstream(version)}'\n", 0o755)
    # Versioned dependencies inside one component, as NVIDIA's packages have them.
    for other, other_version in siblings.items():
        if other == name:
            continue
        if (role == "nccl" and name == "libnccl-dev" and other == "libnccl2") or (
            role == "dcgm" and other.endswith("-core") and not name.endswith("-core")) or (
            role == "container_toolkit" and other.endswith("-base") and not name.endswith("-base")):
            pkg.depends.append(f"{other} (= {other_version})")
    return pkg


def standin_set(
    catalog: Catalog | None = None, *, newer: bool = False, os_name: str = STANDIN_OS, os_roles: bool = False,
) -> list[StandinPackage]:
    """Every stand-in package of every profile's `os_name` set (NVIDIA's CUDA repository),
    deduplicated by (name, version). `os_roles`: also minimal stand-ins of the OS's own packages
    (the `rdma` role), for a repository that must resolve a whole node on its own."""
    catalog = catalog or current_catalog()
    seen: dict[tuple[str, str], StandinPackage] = {}
    for profile in catalog.profiles.values():
        table = profile.os.get(os_name)
        if table is None:
            continue
        for role, packages in table.packages.items():
            if role in DEBIAN_ROLES and not os_roles:
                continue
            bump = NEWER_SUFFIX if newer else ""
            siblings = {p.name: p.version + bump for p in packages}
            for p in packages:
                key = (p.name, p.version + bump)
                if key not in seen:
                    seen[key] = describe(p.name, p.version + bump, role, siblings, p)
    return sorted(seen.values(), key=lambda p: (p.name, p.version))


def _control(pkg: StandinPackage, arch: str) -> str:
    lines = [
        f"Package: {pkg.name}",
        f"Version: {pkg.version}",
        f"Architecture: {arch}",
        "Maintainer: gpudc lab <lab@gpudc.invalid>",
        "Section: misc",
        "Priority: optional",
    ]
    for name, values in (("Depends", pkg.depends), ("Provides", pkg.provides), ("Conflicts", pkg.conflicts),
                         ("Replaces", pkg.replaces)):
        if values:
            lines.append(f"{name}: {', '.join(values)}")
    lines.append(f"Description: gpudc lab stand-in for NVIDIA's {pkg.name}")
    lines.append(" Installs a marker file and, where the real package has one, a harmless service.")
    return "\n".join(lines) + "\n"


def _script(body: str) -> str:
    return "#!/bin/sh\nset -e\n" + body + "exit 0\n"


def deb_filename(pkg: StandinPackage, arch: str = "all") -> str:
    """Debian's file name: `<name>_<version without epoch>_<arch>.deb`."""
    return f"{pkg.name}_{pkg.version.split(':', 1)[-1]}_{arch}.deb"


def build_deb(pkg: StandinPackage, out_dir: Path, *, arch: str = "all") -> Path:
    """Build one .deb with dpkg-deb into out_dir; returns its path."""
    if shutil.which("dpkg-deb") is None:
        raise GpudcError("dpkg-deb not found (Debian package dpkg)")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / deb_filename(pkg, arch)
    with tempfile.TemporaryDirectory(prefix="gpudc-standin-") as tmp:
        root = Path(tmp)
        debian = root / "DEBIAN"
        debian.mkdir()
        for path, (content, mode) in pkg.files.items():
            dest = root / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(content)
            dest.chmod(mode)
        for unit, content in pkg.units.items():
            dest = root / "lib/systemd/system" / unit
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(content)
            dest.chmod(0o644)
        (debian / "control").write_text(_control(pkg, arch))
        if pkg.conffiles:
            (debian / "conffiles").write_text("".join(f"{c}\n" for c in pkg.conffiles))
        if pkg.units:
            units = " ".join(pkg.units)
            reload = "if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\n"
            stop = f"if [ -d /run/systemd/system ]; then systemctl stop {units} || true; fi\n"
            scripts = {"postinst": reload, "prerm": stop, "postrm": reload}
            for name, body in scripts.items():
                (debian / name).write_text(_script(body))
                (debian / name).chmod(0o755)
        root.chmod(0o755)
        for d in sorted(root.rglob("*")):
            if d.is_dir():
                d.chmod(0o755)
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(target)],
            check=True, capture_output=True, timeout=60,
        )
    return target


def build_repo(
    out_dir: Path, *, newer: bool = False, catalog: Catalog | None = None, os_name: str = STANDIN_OS,
    os_roles: bool = False,
) -> list[Path]:
    """Build every stand-in .deb (or the `newer` set) into out_dir; existing ones are rebuilt."""
    packages = standin_set(catalog, newer=newer, os_name=os_name, os_roles=os_roles)
    return [build_deb(pkg, out_dir) for pkg in packages]


def remove_debs(out_dir: Path, packages: Iterable[StandinPackage]) -> None:
    for pkg in packages:
        (out_dir / deb_filename(pkg)).unlink(missing_ok=True)


def publish_to_lab(*, newer: bool = False, lab_status: dict[str, Any] | None = None) -> list[Path]:
    """Build the stand-ins into the lab's repo dir and regenerate its index."""
    from gpudc.lab import api as lab_api

    status = lab_status or lab_api.status()
    repo_dir = Path(status["nvidia_repo_dir"])
    debs = build_repo(repo_dir, newer=newer)
    if not newer:
        # the repo (a persistent cache) holds exactly the catalog's stand-ins: a package the
        # catalog no longer names (an old, wrong name) must not stay installable in the lab
        for stale in set(repo_dir.glob("*.deb")) - set(debs):
            stale.unlink()
    lab_api.refresh_repo()
    return debs


def withdraw_newer_from_lab(*, lab_status: dict[str, Any] | None = None) -> None:
    """Remove the `newer` stand-ins from the lab repo again (and regenerate its index)."""
    from gpudc.lab import api as lab_api

    status = lab_status or lab_api.status()
    remove_debs(Path(status["nvidia_repo_dir"]), standin_set(newer=True))
    lab_api.refresh_repo()
