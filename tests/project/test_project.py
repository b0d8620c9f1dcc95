"""Site projects: found upward from the current folder, by --project or GPUDC_PROJECT; `gpudc init`;
the catalog overlay (adds, overrides, sources, broken overlays) and `gpudc catalog show`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gpudc.cli import main
from gpudc.project import use_project
from gpudc.resources import shipped


@pytest.fixture(autouse=True)
def _no_chosen_project() -> Iterator[None]:
    use_project(None)
    yield
    use_project(None)


def test_project_option_holds_for_one_command_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gpudc.project import current_project

    site = new_project(tmp_path, capsys)
    before = current_project()
    code, _, err = gpudc(capsys, "--project", str(site), "stacks")
    assert code == 0, err
    assert current_project() == before  # main() called again in this process sees no leftover


def gpudc(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def new_project(tmp_path: Path, capsys: pytest.CaptureFixture[str], example: str = "soroban-ayagawa") -> Path:
    code, _, err = gpudc(capsys, "init", str(tmp_path / "site"), "--example", example)
    assert code == 0, err
    return tmp_path / "site"


def test_init_writes_a_project_and_refuses_a_second_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = new_project(tmp_path, capsys)
    pulumi = yaml.safe_load((site / "Pulumi.yaml").read_text())
    assert pulumi["runtime"]["name"] == "python" and pulumi["main"] == "__main__.py"
    assert pulumi["stackConfigDir"] == "stacks"
    assert "from gpudc.infra.program import main" in (site / "__main__.py").read_text()
    assert (site / "stacks" / "Pulumi.soroban-ayagawa.yaml").read_text() == (
        shipped("examples") / "Pulumi.soroban-ayagawa.yaml").read_text()
    assert "secrets" in (site / ".gitignore").read_text() or "bmc-password" in (site / ".gitignore").read_text()
    before = sorted(p.relative_to(site) for p in site.rglob("*"))
    code, _, err = gpudc(capsys, "init", str(site), "--example", "lab")
    assert code == 2 and "nothing written" in err
    code, _, err = gpudc(capsys, "init", str(site / "stacks"))
    assert code == 2 and "inside the gpudc project" in err
    assert sorted(p.relative_to(site) for p in site.rglob("*")) == before


def test_init_default_example_and_unknown_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = gpudc(capsys, "init", str(tmp_path / "a"))
    assert code == 0, err
    text = (tmp_path / "a" / "stacks" / "Pulumi.starter.yaml").read_text()
    assert text.count("#") > 10  # the starter explains itself
    code, _, err = gpudc(capsys, "init", str(tmp_path / "b"), "--example", "nope")
    assert code == 2 and "osaka-sakai" in err and not (tmp_path / "b").exists()


def test_project_found_upward_by_option_and_by_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    site = new_project(tmp_path, capsys)
    deep = site / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    code, out, _ = gpudc(capsys, "stacks")
    assert code == 0 and "soroban-ayagawa" in out and "osaka-sakai" not in out
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = gpudc(capsys, "stacks")
    assert code == 2 and "no gpudc project here" in err
    code, out, _ = gpudc(capsys, "stacks", "--project", str(site))
    assert code == 0 and "soroban-ayagawa" in out
    code, out, _ = gpudc(capsys, "--project", str(site), "stacks")
    assert code == 0 and "soroban-ayagawa" in out
    monkeypatch.setenv("GPUDC_PROJECT", str(site))
    code, out, _ = gpudc(capsys, "stacks")
    assert code == 0 and "soroban-ayagawa" in out
    code, _, err = gpudc(capsys, "stacks", "--project", str(elsewhere))
    assert code == 2 and "no Pulumi.yaml there" in err


def test_stack_config_dir_comes_from_pulumi_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "p"
    (site / "sites").mkdir(parents=True)
    (site / "Pulumi.yaml").write_text("name: p\nruntime: python\nstackConfigDir: sites\n")
    (site / "sites" / "Pulumi.x.yaml").write_text((shipped("examples") / "Pulumi.starter.yaml").read_text())
    code, out, err = gpudc(capsys, "--project", str(site), "stacks")
    assert code == 0 and "starter" in out, err
    (site / "Pulumi.yaml").write_text("name: p\nstackConfigDir: ../outside\n")
    code, _, err = gpudc(capsys, "--project", str(site), "stacks")
    assert code == 2 and "Pulumi.yaml: stackConfigDir" in err


# -- the catalog overlay ----------------------------------------------------------------------


def overlay_sku(site: Path, name: str = "acme_h200", drop: str | None = None, source: bool = True) -> Path:
    sku = yaml.safe_load((shipped("catalog") / "hardware" / "dgx_h200.yaml").read_text())
    sku["name"] = name
    sku["description"] = "ACME's H200 server (an OEM build of HGX H200)"
    if source:
        sku["source"] = "ACME server spec sheet rev 3 (illustrative)"
    if drop:
        del sku["facts"][drop]
    path = site / "catalog" / "hardware" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(sku))
    return path


def overlay_profile(site: Path, sku: str = "acme_h200") -> Path:
    profile = yaml.safe_load((shipped("catalog") / "software" / "r580-cuda13.0.yaml").read_text())
    profile["name"] = "acme-r580"
    profile["description"] = "R580 as ACME's partners run it"
    profile["source"] = "ACME partner standard 2026-11 (illustrative)"
    profile["supports"] = [*profile["supports"], sku]
    path = site / "catalog" / "software" / "acme-r580.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(profile))
    return path


def use_overlay_in_stack(site: Path) -> None:
    path = site / "stacks" / "Pulumi.soroban-ayagawa.yaml"
    doc = yaml.safe_load(path.read_text())
    for pool in doc["config"]["gpudc:pools"]:
        pool["sku"], pool["profile"] = "acme_h200", "acme-r580"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_overlay_adds_a_sku_and_a_profile_that_a_stack_uses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = new_project(tmp_path, capsys)
    sku_file, profile_file = overlay_sku(site), overlay_profile(site)
    use_overlay_in_stack(site)
    code, _, err = gpudc(capsys, "--project", str(site), "plan", "--stack", "soroban-ayagawa",
                         "--json", str(tmp_path / "plan.json"))
    assert code == 0, err
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert {n["sku"] for n in plan["nodes"]} == {"acme_h200"}
    code, out, err = gpudc(capsys, "--project", str(site), "catalog", "show", "--json")
    assert code == 0, err
    entries = {(e["kind"], e["name"]): e for e in json.loads(out)["entries"]}
    assert entries[("sku", "acme_h200")]["file"] == str(sku_file)
    assert entries[("profile", "acme-r580")]["file"] == str(profile_file)
    assert entries[("sku", "dgx_h200")]["file"] == "gpudc:catalog/hardware/dgx_h200.yaml"


def test_overlay_overrides_a_shipped_entry_and_a_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = new_project(tmp_path, capsys)
    path = overlay_sku(site, name="dgx_h200")
    doc = yaml.safe_load(path.read_text())
    doc["facts"]["max_temp_c"] = {"value": 80, "source": "our cooling vendor's limit (illustrative)"}
    path.write_text(yaml.safe_dump(doc))
    thresholds = site / "catalog" / "validation" / "thresholds.yaml"
    thresholds.parent.mkdir(parents=True)
    thresholds.write_text(yaml.safe_dump({"thresholds": {"xid_window_s": {"value": 3600, "source": "our SRE policy"}}}))
    code, _, err = gpudc(capsys, "--project", str(site), "plan", "--stack", "soroban-ayagawa",
                         "--json", str(tmp_path / "plan.json"))
    assert code == 0, err
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert {n["expected"]["max_temp_c"] for n in plan["nodes"]} == {80}
    from gpudc.validate.policy import load_policy

    use_project(site)
    try:
        assert load_policy().threshold("xid_window_s") == 3600
    finally:
        use_project(None)
    code, out, _ = gpudc(capsys, "--project", str(site), "catalog", "show", "--json")
    entries = {(e["kind"], e["name"]): e for e in json.loads(out)["entries"]}
    assert entries[("sku", "dgx_h200")]["file"] == str(path)
    assert entries[("threshold", "xid_window_s")]["file"] == str(thresholds)


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("missing_fact", "facts.gpus: required for a node SKU, missing"),
        ("no_source", "source: an overlay entry must say where its facts come from"),
        ("bad_key", "colour: unknown key"),
        ("unknown_folder", "firmware: not a catalog folder"),
        ("threshold_without_source", "thresholds.xid_window_s: an overlay entry needs its `source:`"),
        ("unknown_threshold", "thresholds.no_such: unknown threshold"),
    ],
)
def test_a_broken_overlay_names_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], breakage: str, expected: str
) -> None:
    site = new_project(tmp_path, capsys)
    where = "acme_h200.yaml"
    if breakage == "missing_fact":
        overlay_sku(site, drop="gpus")
    elif breakage == "no_source":
        overlay_sku(site, source=False)
    elif breakage == "bad_key":
        path = overlay_sku(site)
        doc = yaml.safe_load(path.read_text())
        doc["colour"] = "green"
        path.write_text(yaml.safe_dump(doc))
    elif breakage == "unknown_folder":
        (site / "catalog" / "firmware").mkdir()
        where = "catalog"
    else:
        where = "thresholds.yaml"
        path = site / "catalog" / "validation" / "thresholds.yaml"
        path.parent.mkdir(parents=True)
        body = {"value": 1} if breakage == "threshold_without_source" else {"value": 1, "source": "x"}
        name = "xid_window_s" if breakage == "threshold_without_source" else "no_such"
        path.write_text(yaml.safe_dump({"thresholds": {name: body}}))
    code, out, err = gpudc(capsys, "--project", str(site), "catalog", "show")
    assert code == 2, out + err
    assert where in err and expected in err, err
    assert "Traceback" not in err
