"""The Pulumi program under the SDK's mocks, for every stack in stacks/."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpudc.catalog import load_catalog
from gpudc.errors import InputError
from gpudc.infra.mocks import MockRun, run_program, stack_file_config
from gpudc.model import list_stacks
from gpudc.plan import load_plan
from gpudc.plan.types import Plan

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Secret-Bmc-Pw-4411"  # distinctive, so any leak is found by substring search
SECRET_KEYS = ["gpudc:bmcPassword"]
BMC = "pulumi-python:dynamic/gpudc:BmcSettings"
SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's special signature key, for secret values


def stack_path(stack: str) -> Path:
    return ROOT / "stacks" / f"Pulumi.{stack}.yaml"


def run_stack(stack: str, extra: dict[str, Any] | None = None, with_password: bool = True) -> tuple[MockRun, Plan]:
    base = {"gpudc:bmcPassword": SECRET} if with_password else {}
    config = stack_file_config(stack_path(stack), {**base, **(extra or {})})
    return run_program(config, stack=stack, secret_keys=SECRET_KEYS), load_plan(stack)


def managed(stack: str) -> bool:
    return "gpudc:bmcUser" in (yaml.safe_load(stack_path(stack).read_text())["config"])


def plain_strings(value: Any) -> list[str]:
    """Every string in a value, except the insides of secret-wrapped values."""
    if isinstance(value, dict):
        if value.get(SIG):
            return []
        return [s for k, v in value.items() for s in [str(k), *plain_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in plain_strings(v)]
    return [str(value)]


STACKS = list_stacks()


def test_all_stacks_are_covered() -> None:
    assert {"lab", "osaka-sakai", "ishikari", "soroban-ayagawa"} <= set(STACKS)


@pytest.mark.parametrize("stack", STACKS)
def test_program_maps_the_plan(stack: str) -> None:
    run, plan = run_stack(stack)
    counts = run.counts()
    trays = [d for d in plan.devices if d.kind == "nvlink_switch_tray"]
    fabrics = {f.name for f in plan.fabrics} | {s.fabric for s in plan.switches}
    expected = {
        "gpudc:infra:GpuSite": 1,
        "gpudc:infra:Hall": len(plan.halls),
        "gpudc:infra:Rack": len(plan.racks),
        "gpudc:infra:Node": len(plan.nodes),
        "gpudc:infra:NvlinkSwitchTray": len(trays),
        "gpudc:infra:Fabric": len(fabrics),
        "gpudc:infra:Switch": len(plan.switches),
        BMC: len(plan.nodes) if managed(stack) else 0,
    }
    assert {k: counts.get(k, 0) for k in expected} == expected
    assert set(counts) <= set(expected)

    # Names come from the plan; every URN is unique.
    assert sorted(r.name for r in run.by_type("gpudc:infra:Node")) == sorted(n.name for n in plan.nodes)
    assert sorted(r.name for r in run.by_type("gpudc:infra:Rack")) == sorted(r.name for r in plan.racks)
    assert sorted(r.name for r in run.by_type("gpudc:infra:Switch")) == sorted(s.name for s in plan.switches)
    assert len({r.urn for r in run.resources}) == len(run.resources)

    # Parents: site > hall > rack > node (> bmc), rack > tray, site > fabric > switch.
    nodes = {n.name: n for n in plan.nodes}
    racks = {r.name: r for r in plan.racks}
    devices = {d.name: d for d in plan.devices}
    switches = {s.name: s for s in plan.switches}
    for r in run.resources:
        if r.type == "gpudc:infra:GpuSite":
            assert r.parent.endswith("::pulumi:pulumi:Stack::gpudc-" + stack) and r.name == plan.site.name
        elif r.type == "gpudc:infra:Hall":
            assert r.parent.endswith(f"gpudc:infra:GpuSite::{plan.site.name}")
        elif r.type == "gpudc:infra:Rack":
            assert r.parent.endswith(f"gpudc:infra:Hall::{racks[r.name].hall}")
        elif r.type == "gpudc:infra:Node":
            assert r.parent.endswith(f"gpudc:infra:Rack::{nodes[r.name].rack}")
            assert r.protect, f"node {r.name} is not protected"
        elif r.type == "gpudc:infra:NvlinkSwitchTray":
            assert r.parent.endswith(f"gpudc:infra:Rack::{devices[r.name].rack}")
        elif r.type == "gpudc:infra:Fabric":
            assert r.parent.endswith(f"gpudc:infra:GpuSite::{plan.site.name}")
        elif r.type == "gpudc:infra:Switch":
            assert r.parent.endswith(f"gpudc:infra:Fabric::{plan.site.name}-{switches[r.name].fabric}")
        elif r.type == BMC:
            assert r.custom and r.name.endswith("-bmc")
            assert r.parent.endswith(f"gpudc:infra:Node::{r.name.removesuffix('-bmc')}")
        if r.type.startswith("gpudc:infra:"):
            assert not r.custom

    # Stack outputs.
    out = run.outputs
    assert [n["name"] for n in out["nodes"]] == [n.name for n in plan.nodes]
    assert all(n["address"] == nodes[n["name"]].addresses["inband"] for n in out["nodes"])
    assert all(n["bmcAddress"] == nodes[n["name"]].bmc_address for n in out["nodes"])
    assert out["inventoryPath"].endswith("hosts.yml")
    assert out["totals"]["gpus"] == plan.gpu_count and out["totals"]["nodes"] == len(plan.nodes)
    assert out["nvl72Domains"] == {
        d.name: {"rack": d.rack, "trays": d.nodes, "switchTrays": d.switch_trays} for d in plan.nvlink_domains
    }
    assert out["bmcManaged"] is managed(stack)

    # The secret never appears in plain inputs or outputs.
    for r in run.resources:
        assert SECRET not in " ".join(plain_strings(r.inputs)), f"{r.type} {r.name} carries the password in plain text"
    assert SECRET not in json.dumps(out)


def test_bmc_inputs() -> None:
    run, plan = run_stack("osaka-sakai")
    catalog = load_catalog()
    bmcs = {r.name: r for r in run.by_type(BMC)}
    node = plan.nodes[0]
    inputs = bmcs[f"{node.name}-bmc"].inputs
    assert inputs["password"] == {SIG: "1b47061264138c4ac30d75fd1eb44270", "value": SECRET}
    assert inputs["url"] == f"https://{node.bmc_address}"
    assert inputs["username"] == "gpudc"
    assert inputs["bios"] == catalog.skus[node.sku].fact("bios_attributes")
    assert isinstance(inputs["__provider"], str) and len(inputs["__provider"]) > 20


def test_infra_settings_reach_the_provider() -> None:
    extra = {
        "infra:bmcUrl": "http://{address}:8000",
        "infra:bmcVerify": False,
        "infra:powerRestorePolicy": "AlwaysOn",
        "infra:bootOverride": {"target": "Pxe", "enabled": "Once"},
        "infra:ntpServers": ["10.213.0.1"],
        "infra:syslogServers": ["udp://10.213.0.1:514"],
        "gpudc:bmcUser": "admin",
    }
    run, _plan = run_stack("lab", extra)
    inputs = run.by_type(BMC)[0].inputs
    assert inputs["url"].startswith("http://10.213.1.") and inputs["url"].endswith(":8000")
    assert inputs["verify"] is False and inputs["power_restore_policy"] == "AlwaysOn"
    assert inputs["boot_override"] == {"target": "Pxe", "enabled": "Once"}
    assert inputs["ntp_servers"] == ["10.213.0.1"] and inputs["syslog_servers"] == ["udp://10.213.0.1:514"]


def test_rename_is_an_alias() -> None:
    run, _ = run_stack("lab", {"gpudc:bmcUser": "admin", "infra:renames": {"h200-01": "h200-old"}})
    aliased = {r.name: r.aliases for r in run.resources if r.aliases}
    assert aliased == {"h200-01": ["h200-old"], "h200-01-bmc": ["h200-old-bmc"]}


def test_names_are_stable() -> None:
    first, _ = run_stack("osaka-sakai")
    second, _ = run_stack("osaka-sakai")
    assert sorted(r.urn for r in first.resources) == sorted(r.urn for r in second.resources)


def test_entry_point_as_the_language_host_runs_it() -> None:
    """Pulumi.yaml's `main: src/gpudc/infra/`: the directory's __main__.py is the program."""
    pulumi_yaml = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert pulumi_yaml["main"].rstrip("/") == "src/gpudc/infra" and pulumi_yaml["stackConfigDir"] == "stacks"
    assert (ROOT / pulumi_yaml["main"] / "__main__.py").is_file()
    config = stack_file_config(stack_path("lab"))
    run = run_program(config, stack="lab", entry_point=True)
    assert run.counts()["gpudc:infra:Node"] == 4 and run.outputs["totals"]["gpus"] == 24


def test_preview_mode_runs() -> None:
    config = stack_file_config(stack_path("lab"))
    run = run_program(config, stack="lab", preview=True)
    assert Counter(r.type for r in run.resources)["gpudc:infra:Node"] == 4


def bad_stack(tmp_path: Path, mutate: Any) -> dict[str, str]:
    document = yaml.safe_load(stack_path("lab").read_text())
    mutate(document["config"])
    return stack_file_config(_write(tmp_path, document))


def _write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_bad_stack_fails_with_yaml_path(tmp_path: Path) -> None:
    def mutate(config: dict[str, Any]) -> None:
        config["gpudc:halls"][0]["power_kw"] = -5
        config["gpudc:pools"][0]["cuont"] = 2

    with pytest.raises(InputError) as info:
        run_program(bad_stack(tmp_path, mutate), stack="bad")
    text = str(info.value)
    assert "stacks/Pulumi.bad.yaml: halls[0].power_kw:" in text
    assert "pools[0].cuont: unknown key" in text


def test_plan_rule_errors_surface(tmp_path: Path) -> None:
    def mutate(config: dict[str, Any]) -> None:
        config["gpudc:pools"][0]["profile"] = "r999-nope"

    with pytest.raises(InputError, match=r"pools\[0\]"):
        run_program(bad_stack(tmp_path, mutate), stack="bad")


def test_plain_text_password_is_refused() -> None:
    config = stack_file_config(stack_path("osaka-sakai"), {"gpudc:bmcPassword": SECRET})
    with pytest.raises(InputError, match="must be a Pulumi secret") as info:
        run_program(config, stack="osaka-sakai", secret_keys=[])
    assert SECRET not in str(info.value)


def test_user_without_password_is_refused() -> None:
    with pytest.raises(InputError, match="bmcPassword"):
        run_stack("osaka-sakai", with_password=False)


def test_bad_infra_settings(tmp_path: Path) -> None:
    extra = {"infra:bmcUrl": "ftp://x", "infra:bmcRetries": 99, "infra:ntpServers": "10.0.0.1"}
    with pytest.raises(InputError) as info:
        run_stack("lab", extra)
    assert {p.split(": ")[1] for p in info.value.problems} == {"infra:bmcUrl", "infra:bmcRetries", "infra:ntpServers"}
