"""The Pulumi program: the stack's `gpudc:` config -> site model -> plan -> component resources.

Run by the Pulumi CLI through `Pulumi.yaml` (`main: src/gpudc/infra/`, whose `__main__.py`
calls `main()`), by `gpudc up` through the Automation API, and by the tests under the SDK's
mocks. The program maps the plan; it never re-derives it.

Config read:
  gpudc:*               the site model (`gpudc.model.site.Site`), every key, so a typo is an
                        "unknown key" error with its YAML path, as in `gpudc plan`
  gpudc:bmcUser         BMC user; with it, every node gets a `BmcSettings` resource
  gpudc:bmcPassword     the BMC password; must be a Pulumi secret
  infra:bmcUrl          URL template of a node's BMC, default "https://{address}"
  infra:bmcVerify       TLS verification: true (default), false, or a CA bundle path
  infra:bmcTimeout / infra:bmcRetries      per-call timeout (s) and retries
  infra:powerRestorePolicy                 AlwaysOn | AlwaysOff | LastState (unset: unmanaged)
  infra:bootOverride    {target: Pxe, enabled: Once} applied when a node's BMC is first managed
  infra:ntpServers / infra:syslogServers   lists (unset: unmanaged)
  infra:renames         {new-name: old-name}: aliases, so a rename is not a replace
  infra:inventoryPath   where `gpudc provision` keeps the inventory (stack output)
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from gpudc.catalog import Catalog, current_catalog
from gpudc.errors import InputError
from gpudc.infra.components import BmcPolicy, GpuSite, SiteArgs
from gpudc.infra.settings import INFRA, InfraSettings, parse_infra_settings
from gpudc.model.loader import site_from_config
from gpudc.plan import expand
from gpudc.plan.types import Plan
from gpudc.project import site_state_dir

NAMESPACE = "gpudc"
SECRET_KEY = f"{NAMESPACE}:bmcPassword"


class ProgramInputError(InputError, pulumi.RunError):
    """Bad stack config; pulumi prints it without a traceback (RunError)."""


def _config_keys() -> list[str]:
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    return sorted(keys)


def _value(full_key: str) -> Any:
    raw = runtime_config.get_config(full_key)
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def stack_source() -> str:
    return f"stacks/Pulumi.{pulumi.get_stack()}.yaml"


def site_config() -> dict[str, Any]:
    """The `gpudc:` namespace as the model reads it (keys without prefix), password left out."""
    data: dict[str, Any] = {}
    for full in _config_keys():
        namespace, _, key = full.partition(":")
        if namespace == NAMESPACE and full != SECRET_KEY:
            data[key] = _value(full)
    return data


def bmc_password() -> pulumi.Output[str] | None:
    """The BMC password as a secret Output; an error if it is set in plain text."""
    if runtime_config.get_config(SECRET_KEY) is None:
        return None
    if not runtime_config.is_config_secret(SECRET_KEY):
        raise ProgramInputError(
            "bmcPassword: must be a Pulumi secret, not plain text: pulumi config set --secret gpudc:bmcPassword ...",
            source=stack_source(),
        )
    return pulumi.Config(NAMESPACE).require_secret("bmcPassword")


def _site_store_password(site: str, source: str) -> pulumi.Output[str]:
    """Without a Pulumi secret, the BMC password of gpudc's own store (gpudc.access): the one
    path every other gpudc command reads, so `pulumi up` and `gpudc reprovision` agree."""
    from gpudc.access import bmc_password as site_bmc_password

    try:
        return pulumi.Output.secret(site_bmc_password(site))
    except InputError:
        raise ProgramInputError(
            "bmcPassword: gpudc:bmcUser is set but the password is not: "
            "pulumi config set --secret gpudc:bmcPassword ... (or the site's secret store: "
            "GPUDC_BMC_PASSWORD or the 0600 file bmc-password in its secret dir)",
            source=source,
        ) from None


def infra_settings() -> InfraSettings:
    """The `infra:` namespace, checked (gpudc.infra.settings); problems name their key."""
    settings, problems = parse_infra_settings(lambda key: _value(f"{INFRA}:{key}"))
    if problems:
        raise ProgramInputError(problems, source=stack_source())
    return settings


def bios_by_sku(plan: Plan, catalog: Catalog) -> dict[str, dict[str, Any]]:
    """SKU -> BIOS attributes, from the catalog fact `bios_attributes` (absent: none managed)."""
    result: dict[str, dict[str, Any]] = {}
    for sku_name in {n.sku for n in plan.nodes}:
        fact = catalog.skus[sku_name].facts.get("bios_attributes")
        result[sku_name] = dict(fact.value) if fact and fact.value else {}
    return result


def inventory_path(site: str, settings: InfraSettings) -> str:
    if settings.inventory_path:
        return settings.inventory_path
    return str(site_state_dir(site) / "inventory" / "hosts.yml")


def totals(plan: Plan) -> dict[str, Any]:
    return {
        "halls": len(plan.halls),
        "racks": len(plan.racks),
        "nodes": len(plan.nodes),
        "gpus": plan.gpu_count,
        "switches": len(plan.switches),
        "nvlinkSwitchTrays": sum(1 for d in plan.devices if d.kind == "nvlink_switch_tray"),
        "cables": len(plan.cables),
        "powerKw": round(sum(h.power_kw for h in plan.halls), 3),
    }


def build(catalog: Catalog | None = None) -> GpuSite:
    """Read config, expand the plan, declare the resources and the stack outputs."""
    catalog = catalog or current_catalog()
    source = stack_source()
    site = site_from_config(site_config(), source)  # InputError with YAML paths
    settings = infra_settings()
    password = bmc_password()
    if site.bmcUser and password is None:
        password = _site_store_password(site.site.name, source)
    plan = expand(site, catalog, stack=pulumi.get_stack(), source=source)
    bmc = None
    if site.bmcUser and password is not None:
        bmc = BmcPolicy(username=site.bmcUser, password=password, defaults=settings.bmc)
    site_resource = GpuSite(
        plan.site.name,
        SiteArgs(plan=plan, bios=bios_by_sku(plan, catalog), bmc=bmc, renames=settings.renames or {}),
    )
    pulumi.export(
        "nodes",
        [
            {
                "name": n.name,
                "hall": n.hall,
                "rack": n.rack,
                "pool": n.pool,
                "sku": n.sku,
                "address": n.addresses.get("inband"),
                "addresses": dict(n.addresses),
                "bmcAddress": n.bmc_address,
                "nvlinkDomain": n.nvlink_domain,
            }
            for n in plan.nodes
        ],
    )
    pulumi.export("inventoryPath", inventory_path(plan.site.name, settings))
    pulumi.export(
        "nvl72Domains",
        {d.name: {"rack": d.rack, "trays": list(d.nodes), "switchTrays": list(d.switch_trays)} for d in plan.nvlink_domains},
    )
    pulumi.export("totals", totals(plan))
    pulumi.export("bmcManaged", bmc is not None)
    return site_resource


def main() -> None:
    try:
        build()
    except ProgramInputError:
        raise
    except InputError as exc:
        raise ProgramInputError(exc.problems) from None
