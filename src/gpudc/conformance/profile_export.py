"""A software profile in forms a partner without gpudc can use, and its digest.

- `json`: the whole profile (components with their sources, every OS's packages), canonical
  (sorted keys, two-space indent). Its SHA-256 is the profile's digest that reports carry, so
  `gpudc profile export P --format json | sha256sum` checks a report's profile.
- `apt-preferences`: one OS's exact pins as an apt preferences file (priority 1001, as the
  provisioning playbook writes them), with the packages to `apt-mark hold` listed in comments.
- `ansible-vars`: one OS's pins in the variables gpudc's roles read (`gpudc_packages` by role, ...).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from gpudc.catalog import PACKAGE_ROLES, Profile, current_catalog, current_os_catalog
from gpudc.errors import InputError

FORMATS = ("json", "apt-preferences", "ansible-vars")
#: Roles whose packages provisioning also holds (dpkg selection `hold`): the driver and what must
#: equal its version exactly (playbooks/roles/nvidia_driver, fabric_manager with nvlsm, imex).
HELD_ROLES = ("driver", "fabric_manager", "nvlsm", "imex")
#: apt pin priority the nvidia_repo role writes (above 1000: it also downgrades).
PIN_PRIORITY = 1001


def canonical_json(data: Any) -> str:
    """The one serialisation gpudc signs and digests: sorted keys, indent 2, UTF-8, final newline."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def get_profile(name: str) -> Profile:
    profiles = current_catalog().profiles  # shipped + the project's overlay
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise InputError(f"profile {name!r}: not in the catalog (known: {known})")
    return profiles[name]


def profile_document(profile: Profile) -> dict[str, Any]:
    # unset optional fields are left out, so a field added to the model later keeps old digests
    return profile.model_dump(mode="json", exclude_none=True)


def profile_digest(profile: Profile) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(profile_document(profile)).encode()).hexdigest()


def held_packages(profile: Profile, os_name: str) -> list[str]:
    table = profile.os[os_name].packages
    return [p.name for role in HELD_ROLES for p in table.get(role, [])]


def role_of(profile: Profile, os_name: str, package: str) -> str | None:
    for role, packages in profile.os[os_name].packages.items():
        if any(p.name == package for p in packages):
            return role
    return None


def _check_os(profile: Profile, os_name: str | None, fmt: str) -> str:
    if os_name is None:
        raise InputError(
            f"profile export --format {fmt}: --os is required (one of {', '.join(sorted(profile.os))})"
        )
    if os_name not in profile.os:
        raise InputError(
            f"--os {os_name!r}: profile {profile.name!r} pins no packages for it "
            f"(it has {', '.join(sorted(profile.os))}; gpudc knows {', '.join(current_os_catalog().names)})"
        )
    return os_name


def export_profile(profile: Profile, fmt: str, os_name: str | None = None) -> str:
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "json":
        if os_name is not None:
            _check_os(profile, os_name, fmt)
        return canonical_json(profile_document(profile))
    os_name = _check_os(profile, os_name, fmt)
    table = profile.os[os_name].packages
    digest = profile_digest(profile)
    if fmt == "apt-preferences":
        lines = [
            f"# gpudc software profile {profile.name} (release {profile.release}) for {os_name}",
            f"# profile digest {digest} (gpudc profile export {profile.name} --format json | sha256sum)",
            "# fabric manager, nvlsm and IMEX packages apply only to SKUs that use them.",
            "# Hold after installing: apt-mark hold " + " ".join(held_packages(profile, os_name)),
        ]
        for role in PACKAGE_ROLES:
            for package in table.get(role, []):
                lines += ["", f"Package: {package.name}", f"Pin: version {package.version}",
                          f"Pin-Priority: {PIN_PRIORITY}"]
        return "\n".join(lines) + "\n"
    comps = profile.components
    variables: dict[str, Any] = {
        "gpudc_profile": profile.name,
        "gpudc_profile_digest": digest,
        "gpudc_os": os_name,
        "gpudc_driver_version": comps["driver"].version,
        "gpudc_driver_branch": comps["driver"].branch,
        "gpudc_kernel_module": comps["driver"].kernel_module,
        "gpudc_packages": {
            role: {p.name: p.version for p in table.get(role, [])} for role in PACKAGE_ROLES
        },
        "gpudc_held_packages": held_packages(profile, os_name),
    }
    header = f"# gpudc software profile {profile.name} for {os_name}: the variables gpudc's roles read\n"
    return header + "---\n" + yaml.safe_dump(variables, sort_keys=False, default_flow_style=False)
