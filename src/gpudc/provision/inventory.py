"""The Ansible inventory of a site, built from the plan (one code path for render and provision).

Groups: `site_<s>`, `hall_<h>`, `rack_<r>`, `pool_<p>`, `sku_<k>`, `profile_<p>`, `os_<o>`,
`nvlink_<domain>`, `su_<n>`, plus the derived `hgx_nodes` (own NVSwitch domain: fabric manager)
and `nvl72_trays` (multi-node NVLink domain: IMEX). Names are made Ansible-safe (`[^A-Za-z0-9_]`
becomes `_`). Host vars carry addresses, rails, the NVLink domain and the slot of the node in it
(site.yml's driver wave), the node's upgrade wave (`gpudc_upgrade_wave`: gpudc.upgrade.waves
with the default wave size, so upgrade.yml run on its own never moves a whole pool at once), and the profile's exact package versions split by role, as the plan holds
them: the inventory reads the plan only, never the catalog. No secret is ever written: SSH keys
and known_hosts are passed to the runner, not stored here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from gpudc.errors import InputError
from gpudc.plan.types import Node, Plan
from gpudc.upgrade.waves import wave_index

#: Variables that must never reach an inventory (they would be secrets in a file).
_SECRET_WORDS = ("password", "passwd", "secret", "private_key", "token", "ssh_pass", "become_pass")


def group_name(prefix: str, value: object) -> str:
    """An Ansible-safe group name: `rack_lab_a01` for ('rack', 'lab-a01')."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{prefix}_{value}").lower()


def _domain_slots(plan: Plan) -> dict[str, tuple[str, int]]:
    """node -> (NVLink domain, position in it). HGX nodes are their own domain (slot 0)."""
    slots: dict[str, tuple[str, int]] = {}
    for domain in plan.nvlink_domains:
        for i, name in enumerate(domain.nodes):
            slots[name] = (domain.name, i)
    for node in plan.nodes:
        if node.name not in slots:
            slots[node.name] = (node.nvlink_domain or node.name, 0)
    return slots


def host_vars(node: Node, domain: str, slot: int, wave: int = 0) -> dict[str, Any]:
    exp = node.expected
    rails = [
        {"name": nic.name, "rail": nic.rail, "rate_gbps": nic.rate_gbps, "address": nic.address,
         "switch": nic.switch, "switch_port": nic.switch_port}
        for nic in sorted((n for n in node.nics if n.rail is not None), key=lambda n: n.rail or 0)
    ]
    return {
        "ansible_host": node.ssh_address,
        "gpudc_node": node.name,
        "gpudc_site": node.site,
        "gpudc_hall": node.hall,
        "gpudc_rack": node.rack,
        "gpudc_rack_unit": node.u,
        "gpudc_pool": node.pool,
        "gpudc_pool_index": node.index,
        "gpudc_sku": node.sku,
        "gpudc_gpu_arch": exp.gpu_arch,
        "gpudc_gpu_count": exp.gpu_count,
        "gpudc_su": node.su,
        "gpudc_nvlink_domain": node.nvlink_domain,
        "gpudc_domain": domain,
        "gpudc_domain_slot": slot,
        "gpudc_upgrade_wave": wave,
        "gpudc_addresses": dict(node.addresses),
        "gpudc_bmc_address": node.bmc_address,
        "gpudc_boot_mac": node.boot_mac,
        "gpudc_rails": rails,
        "gpudc_profile": node.profile,
        "gpudc_os": node.os,
        "gpudc_driver_version": exp.driver_version,
        "gpudc_driver_branch": exp.driver_branch,
        "gpudc_kernel_module": exp.kernel_module,
        "gpudc_cuda_version": exp.cuda_version,
        "gpudc_nccl_version": exp.nccl_version,
        "gpudc_fabric_manager": exp.fabric_manager,
        "gpudc_nvlsm": exp.nvlsm,
        "gpudc_imex": exp.imex,
        "gpudc_imex_peers": list(exp.imex_peers),
        # Fresh dicts: the plan shares one per pool, and YAML would write shared ones as aliases.
        "gpudc_packages": {role: dict(packages) for role, packages in exp.packages_by_role.items()},
        "gpudc_rdma_mode": exp.rdma_mode,
        "gpudc_doca_version": exp.doca_version,
    }


def _check_no_secret(extra_vars: dict[str, Any]) -> None:
    bad = [k for k in extra_vars if any(word in k.lower() for word in _SECRET_WORDS)]
    if bad:
        raise InputError(f"extra_vars: {', '.join(sorted(bad))}: secrets never go into the inventory")


def build_inventory(plan: Plan, *, extra_vars: dict[str, Any] | None = None) -> dict[str, Any]:
    """The YAML-able Ansible inventory of the plan (hosts, groups, host vars; no secret)."""
    extra = dict(extra_vars or {})
    _check_no_secret(extra)
    slots = _domain_slots(plan)
    waves = wave_index(plan.nodes, slots={name: slot for name, (_, slot) in slots.items()})
    hosts: dict[str, Any] = {}
    groups: dict[str, list[str]] = {}

    def add(group: str, host: str) -> None:
        members = groups.setdefault(group, [])
        if host not in members:
            members.append(host)

    for node in plan.nodes:
        domain, slot = slots[node.name]
        hosts[node.name] = host_vars(node, domain, slot, waves[node.name])
        add(group_name("site", node.site), node.name)
        add(group_name("hall", node.hall), node.name)
        add(group_name("rack", node.rack), node.name)
        add(group_name("pool", node.pool), node.name)
        add(group_name("sku", node.sku), node.name)
        add(group_name("profile", node.profile), node.name)
        add(group_name("os", node.os), node.name)
        if node.su is not None:
            add(group_name("su", node.su), node.name)
        if node.nvlink_domain:
            add(group_name("nvlink", node.nvlink_domain), node.name)
            add("nvl72_trays", node.name)
        else:
            add("hgx_nodes", node.name)
    for fixed in ("hgx_nodes", "nvl72_trays"):
        groups.setdefault(fixed, [])
    all_vars: dict[str, Any] = {
        "ansible_user": "root",
        "ansible_python_interpreter": "/usr/bin/python3",
        "gpudc_stack": plan.site.stack,
        "gpudc_site_name": plan.site.name,
        **extra,
    }
    return {
        "all": {
            "vars": all_vars,
            "hosts": hosts,
            "children": {name: {"hosts": {h: None for h in members}} for name, members in sorted(groups.items())},
        }
    }


#: libyaml's emitter when PyYAML was built with it (same bytes as the pure-Python one, ~4x faster).
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump_inventory(inventory: dict[str, Any]) -> str:
    return yaml.dump(inventory, Dumper=_DUMPER, sort_keys=False, default_flow_style=False)


def write_inventory(plan: Plan, path: Path | str, *, extra_vars: dict[str, Any] | None = None) -> Path:
    """Write the inventory YAML to `path` (the render tree and the runner both use this)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(dump_inventory(build_inventory(plan, extra_vars=extra_vars)))
    return target
