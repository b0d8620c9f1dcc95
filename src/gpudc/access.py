"""How gpudc reaches a site's nodes and BMCs: one boundary, resolved once from the plan, the
stack and the site's secrets. provision, validate, reprovision and conformance take a
`SiteAccess` and never ask which site they are working on.

Where each piece comes from, in order (a later source wins):

| piece | default | stack | access file |
| --- | --- | --- | --- |
| node address | the plan's in-band address | | `addresses` |
| SSH user, port, jump host | root, 22, none | `gpudc:access.ssh` | `ssh.user`, `ssh.port`, `ssh.jump` |
| SSH identity | the site's controller key (secret dir, made by `gpudc render`/`lab up`) | | `ssh.identity` |
| known_hosts | the site's (secret dir), written from its pre-generated host keys | | `ssh.known_hosts` |
| BMC URL | `https://{address}` of the plan's BMC address | `infra:bmcUrl` | `bmc.endpoints` |
| BMC TLS verify, timeout, retries | true, 10 s, 3 | `infra:bmcVerify`, `bmcTimeout`, `bmcRetries` | `bmc.verify` |
| BMC user | | `gpudc:bmcUser` | `bmc.username` |
| BMC password | `$GPUDC_BMC_PASSWORD`, else `<secret dir>/bmc-password` (0600) | | `bmc.password_file` (0600) |
| provisioning variables | none | | `provision_vars` |

The access file (`gpudc:access.file`, JSON) is for sites whose reachability is known to some
other tool: the lab writes one when it comes up; a CMDB export can be another. The Pulumi
program reads its BMC password from Pulumi's secret config (`gpudc:bmcPassword`) when that is
set, and otherwise from this module, so each BMC has one credential path outside Pulumi.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpudc import secrets
from gpudc.errors import InputError, UnreachableError
from gpudc.infra.settings import infra_settings_of
from gpudc.plan.types import Node, Plan
from gpudc.project import site_secret_dir

if TYPE_CHECKING:
    from gpudc.infra.redfish import BmcClient
    from gpudc.validate.fanout import JumpHost

PASSWORD_ENV = "GPUDC_BMC_PASSWORD"
PASSWORD_FILE = "bmc-password"


@dataclass(frozen=True, slots=True)
class BmcEndpoint:
    url: str
    system: str | None = None  # Redfish system id/path; None: the BMC's only system


@dataclass(slots=True)
class SiteAccess:
    """Everything needed to reach one site's nodes and BMCs; paths and names only, no secret."""

    site: str
    addresses: dict[str, str]  # node -> the address SSH, Ansible and the validator use
    ssh_user: str
    ssh_port: int
    ssh_identity: Path | None  # None: the ssh-agent's keys
    known_hosts: Path
    jump: str | None
    bmc: dict[str, BmcEndpoint]
    bmc_username: str | None
    bmc_verify: bool | str
    bmc_timeout: float
    bmc_retries: int
    provision_vars: dict[str, Any]
    password_source: Callable[[], str] = field(repr=False)

    def address(self, node: Node | str) -> str:
        name = node if isinstance(node, str) else node.name
        return self.addresses[name]

    def bmc_password(self) -> str:
        return self.password_source()

    def jump_host(self) -> JumpHost | None:
        from gpudc.validate.fanout import JumpHost

        return JumpHost.parse(self.jump) if self.jump else None

    def bmc_client(self, node: Node, *, timeout: float | None = None, retries: int | None = None) -> BmcClient:
        """A Redfish client of the node's BMC with the site's URL, TLS and credential settings."""
        from gpudc.infra.redfish import BmcClient

        endpoint = self.bmc.get(node.name)
        if endpoint is None:
            raise InputError(f"{node.name}: no BMC endpoint (the plan gives it no BMC address)")
        if not self.bmc_username:
            raise InputError(f"site {self.site}: no BMC user (gpudc:bmcUser in the stack)")
        return BmcClient(
            endpoint.url, self.bmc_username, self.bmc_password(),
            timeout=self.bmc_timeout if timeout is None else timeout,
            retries=self.bmc_retries if retries is None else retries,
            verify=self.bmc_verify, system_id=endpoint.system,
        )


def read_password_file(path: Path) -> str:
    """A password from a file that only its owner may read (mode 0600); never echoed."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise InputError(f"BMC password: {path} does not exist") from None
    if mode & 0o077:
        raise InputError(f"{path}: mode {mode:04o}; a password file must be 0600")
    password = path.read_text().strip()
    if not password:
        raise InputError(f"{path}: empty")
    return password


def bmc_password(site: str, env: dict[str, str] | None = None) -> str:
    """The site's BMC password: $GPUDC_BMC_PASSWORD, else the 0600 file `bmc-password` in its secret dir."""
    env = dict(os.environ) if env is None else env
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV]
    path = site_secret_dir(site) / PASSWORD_FILE
    if not path.exists():
        raise InputError(f"BMC password: set {PASSWORD_ENV} or write it to {path} (mode 0600)")
    return read_password_file(path)


def site_known_hosts(plan: Plan) -> Path:
    """The site's known_hosts (secret dir); when missing, written from the host keys that
    `gpudc render` pre-generated into the nodes' user-data (never made up here: a key no node
    has would only make every check fail)."""
    path = site_secret_dir(plan.site.name) / "known_hosts"
    if not path.exists():
        lines = []
        for node in plan.nodes:
            public = secrets.existing_host_key(plan.site.name, node.name)
            if public:
                lines.append(secrets.known_hosts_line(node.name, sorted(set(node.addresses.values())), public))
        if lines:
            path.write_text("\n".join(lines) + "\n")
            path.chmod(0o600)
    return path


def _access_file(path: Path, source: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UnreachableError(
            f"{source}: access file {path} is missing (gpudc:access.file; for the lab: gpudc lab up)"
        ) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"access file {path}: {exc}") from None
    known = {"addresses", "ssh", "bmc", "provision_vars"}
    if not isinstance(data, dict) or set(data) - known:
        raise InputError(f"access file {path}: expected an object with {', '.join(sorted(known))}")
    return data


def site_access(plan: Plan, stack: str | None = None) -> SiteAccess:
    """How to reach the site of `plan` (stack: its name or file, default the plan's own)."""
    from gpudc.model.loader import display_path, read_config, resolve_stack, site_from_config

    path = resolve_stack(stack or plan.site.stack)
    source = display_path(path)
    site = site_from_config(read_config(path), source)
    settings = infra_settings_of(read_config(path, "infra:"), source)
    site_name = plan.site.name
    key = site_secret_dir(site_name) / "controller_ed25519"  # gpudc.secrets.controller_key's file
    access = SiteAccess(
        site=site_name,
        addresses={n.name: n.ssh_address for n in plan.nodes},
        ssh_user=site.access.ssh.user,
        ssh_port=site.access.ssh.port,
        ssh_identity=key if key.exists() else None,
        known_hosts=site_secret_dir(site_name) / "known_hosts",
        jump=site.access.ssh.jump,
        bmc={n.name: BmcEndpoint(settings.bmc.url(n.bmc_address)) for n in plan.nodes if n.bmc_address},
        bmc_username=site.bmcUser,
        bmc_verify=settings.bmc.verify,
        bmc_timeout=settings.bmc.timeout,
        bmc_retries=settings.bmc.retries,
        provision_vars={},
        password_source=lambda: bmc_password(site_name),
    )
    if site.access.file:
        _apply_file(access, Path(site.access.file), source)
    else:
        access.known_hosts = site_known_hosts(plan)
    return access


def _apply_file(access: SiteAccess, path: Path, source: str) -> None:
    data = _access_file(path, source)
    where = f"access file {path}"
    try:
        access.addresses.update({str(k): str(v) for k, v in (data.get("addresses") or {}).items()})
        ssh = data.get("ssh") or {}
        access.ssh_user = str(ssh.get("user", access.ssh_user))
        access.ssh_port = int(ssh.get("port", access.ssh_port))
        access.jump = ssh.get("jump", access.jump)
        if ssh.get("identity"):
            access.ssh_identity = Path(ssh["identity"])
        if ssh.get("known_hosts"):
            access.known_hosts = Path(ssh["known_hosts"])
        bmc = data.get("bmc") or {}
        for name, endpoint in (bmc.get("endpoints") or {}).items():
            access.bmc[str(name)] = BmcEndpoint(str(endpoint["url"]), endpoint.get("system"))
        access.bmc_username = bmc.get("username", access.bmc_username)
        access.bmc_verify = bmc.get("verify", access.bmc_verify)
        if bmc.get("password_file"):
            password_file = Path(bmc["password_file"])
            access.password_source = lambda: read_password_file(password_file)
        access.provision_vars.update(dict(data.get("provision_vars") or {}))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{where}: malformed ({type(exc).__name__}: {exc})") from None
