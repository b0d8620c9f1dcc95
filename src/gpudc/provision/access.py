"""How the controller reaches a site's nodes: SSH key, known_hosts and the repository variables.

The `lab` site: the lab's own key, known_hosts and repositories (`gpudc.lab.api.status()`), the
stand-in packages published into its repo, and kernel actions off (its hosts are containers).
Any other site: the controller key from `gpudc.secrets` and a known_hosts file in the site's
secret dir, written from the pre-generated host keys when missing. Host keys are always checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpudc import secrets
from gpudc.plan.types import Plan

LAB_PROVIDER = "gpudc-lab"


@dataclass(slots=True)
class Access:
    ssh_key: Path
    known_hosts: Path
    extra_vars: dict[str, Any] = field(default_factory=dict)


def is_lab(plan: Plan) -> bool:
    return plan.site.provider == LAB_PROVIDER or plan.site.name == "lab"


def lab_extra_vars(status: dict[str, Any]) -> dict[str, Any]:
    """The variables that point the unchanged roles at the lab's stand-in repository."""
    return {
        "nvidia_repo_url": status["nvidia_repo_url"],
        "gpudc_repo_trusted": True,
        "gpudc_kernel_actions": False,
    }


def ensure_standins(status: dict[str, Any]) -> bool:
    """Publish the stand-in packages into the lab repo when any is missing; True if it did."""
    from gpudc.provision.standin import deb_filename, publish_to_lab, standin_set

    repo = Path(status["nvidia_repo_dir"])
    if all((repo / deb_filename(p)).exists() for p in standin_set()):
        return False
    publish_to_lab(lab_status=status)
    return True


def lab_access() -> Access:
    from gpudc.lab import api as lab_api

    status = lab_api.status()
    ensure_standins(status)
    return Access(Path(status["ssh_key"]), Path(status["known_hosts"]), lab_extra_vars(status))


def site_known_hosts(plan: Plan) -> Path:
    """The site's known_hosts (secret dir), written from the pre-generated host keys if missing."""
    path = secrets.site_secret_dir(plan.site.name) / "known_hosts"
    if not path.exists():
        lines = []
        for node in plan.nodes:
            _, public = secrets.host_key(plan.site.name, node.name)
            lines.append(secrets.known_hosts_line(node.name, sorted(set(node.addresses.values())), public))
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
    return path


def site_access(plan: Plan) -> Access:
    if is_lab(plan):
        return lab_access()
    key, _ = secrets.controller_key(plan.site.name)
    return Access(key, site_known_hosts(plan), {})
