"""The `infra:` namespace of a stack: site-wide settings that are not site facts (BMC URL, TLS
verification, timeouts, renames). One parser serves the Pulumi program (which reads the stack
through Pulumi's config) and `gpudc.access` (which reads the stack file), so both reach a
BMC the same way. No Pulumi import here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpudc.errors import InputError

INFRA = "infra"


@dataclass
class BmcDefaults:
    """Site-wide BMC settings that are not hardware facts (the `infra:` config namespace)."""

    url_template: str = "https://{address}"
    verify: bool | str = True
    timeout: float = 10
    retries: int = 3
    power_restore_policy: str | None = None
    boot_override: dict[str, str] | None = None
    ntp_servers: list[str] | None = None
    syslog_servers: list[str] | None = None

    def url(self, address: str) -> str:
        return self.url_template.format(address=address)


@dataclass
class InfraSettings:
    bmc: BmcDefaults = field(default_factory=BmcDefaults)
    renames: dict[str, str] | None = None
    inventory_path: str | None = None


def parse_infra_settings(get: Callable[[str], Any]) -> tuple[InfraSettings, list[str]]:
    """(settings, problems) of the `infra:` keys that `get(key)` returns (None when unset)."""
    problems: list[str] = []
    s = InfraSettings()
    b = s.bmc
    url = get("bmcUrl")
    if url is not None:
        if not isinstance(url, str) or "{address}" not in url or not url.startswith(("http://", "https://")):
            problems.append("infra:bmcUrl: must be an http(s) URL template containing {address}")
        else:
            b.url_template = url
    verify = get("bmcVerify")
    if verify is not None:
        if isinstance(verify, bool) or (isinstance(verify, str) and verify):
            b.verify = verify
        else:
            problems.append("infra:bmcVerify: must be true, false or a CA bundle path")
    for key, attr, low, high in (("bmcTimeout", "timeout", 0.1, 300), ("bmcRetries", "retries", 0, 10)):
        value = get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            problems.append(f"infra:{key}: must be a number in [{low}, {high}]")
        else:
            setattr(b, attr, int(value) if attr == "retries" else float(value))
    policy = get("powerRestorePolicy")
    if policy is not None:
        b.power_restore_policy = str(policy)
    override = get("bootOverride")
    if override is not None:
        if not isinstance(override, dict) or "target" not in override:
            problems.append("infra:bootOverride: must be a mapping with target (and enabled, mode)")
        else:
            b.boot_override = {str(k): str(v) for k, v in override.items()}
    for key, attr in (("ntpServers", "ntp_servers"), ("syslogServers", "syslog_servers")):
        value = get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            problems.append(f"infra:{key}: must be a list of strings")
        else:
            setattr(b, attr, list(value))
    renames = get("renames")
    if renames is not None:
        if not isinstance(renames, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in renames.items()):
            problems.append("infra:renames: must map new names to old names")
        else:
            s.renames = dict(renames)
    inventory = get("inventoryPath")
    if inventory is not None:
        s.inventory_path = str(inventory)
    return s, problems


def infra_settings_of(namespace: dict[str, Any], source: str) -> InfraSettings:
    """The settings of a stack file's `infra:` keys (without prefix); InputError naming each key."""
    settings, problems = parse_infra_settings(namespace.get)
    if problems:
        raise InputError(problems, source=source)
    return settings
