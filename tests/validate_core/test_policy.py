from __future__ import annotations

import pytest
import yaml

from gpudc.catalog import shipped_catalog_dir as catalog_dir
from gpudc.errors import InputError
from gpudc.validate.policy import load_policy


def test_every_xid_row_and_rule_has_a_source() -> None:
    data = yaml.safe_load((catalog_dir() / "validation" / "xid.yaml").read_text())
    assert all(row.get("source") for row in data["xids"].values())
    assert all(r.get("source") for r in data["resolutions"].values())
    thr = yaml.safe_load((catalog_dir() / "validation" / "thresholds.yaml").read_text())
    assert all(v.get("source") for v in thr["thresholds"].values())
    assert all(v.get("source") for v in thr["rules"].values())


@pytest.mark.parametrize(
    ("code", "severity", "action"),
    [
        (79, "fail", "reboot"),
        (48, "fail", "reset_gpu"),
        (64, "fail", "reset_gpu"),
        (74, "fail", "reset_gpu"),
        (95, "fail", "reset_gpu"),
        (119, "fail", "reset_gpu"),
        (120, "fail", "reset_gpu"),
        (149, "fail", "reset_gpu"),
        (63, "warn", "none"),
        (92, "warn", "none"),
        (94, "warn", "none"),
        (13, "warn", "none"),
        (43, "info", "none"),
    ],
)
def test_xid_actions_follow_the_catalog(code: int, severity: str, action: str) -> None:
    rule = load_policy().xid(code)
    assert (rule.severity, rule.action) == (severity, action)


def test_unknown_xid_uses_the_default() -> None:
    rule = load_policy().xid(999)
    assert rule.name == "UNKNOWN" and rule.severity == "warn" and rule.action == "none"


def test_thresholds_from_the_reference() -> None:
    p = load_policy()
    assert p.threshold("xid_window_s") == 7200
    assert p.threshold("reboots_before_rma") == 2
    assert p.threshold("remap_uncorrectable_warn") == 512


def test_site_overrides_apply() -> None:
    p = load_policy(
        {
            "thresholds": {
                "xid_window_s": 3600,
                "remap_uncorrectable_warn": {"value": 100, "source": "site"},
            },
            "rules": {"persistence_off": {"severity": "fail"}},
            "xids": {94: {"severity": "fail", "action": "reset_gpu"}},
            "resolutions": {"RESTART_APP": {"severity": "info"}},
        }
    )
    assert p.threshold("xid_window_s") == 3600
    assert p.threshold("remap_uncorrectable_warn") == 100
    assert p.rule("persistence_off").severity == "fail"
    assert p.rule("persistence_off").action == "none"  # untouched fields keep the catalog's value
    assert (p.xid(94).severity, p.xid(94).action) == ("fail", "reset_gpu")
    assert p.xid(13).severity == "info"  # via its resolution


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"thresholdz": {}}, "overrides.thresholdz: unknown key"),
        ({"thresholds": {"xid_windw_s": 1}}, "overrides.thresholds.xid_windw_s: unknown threshold"),
        ({"rules": {"nope": {"severity": "warn"}}}, "overrides.rules.nope: unknown rule"),
        ({"rules": {"gpu_lost": {"severity": "bad"}}}, "severity 'bad'"),
        ({"rules": {"gpu_lost": {"actio": "rma"}}}, "overrides.rules.gpu_lost.actio: unknown key"),
        ({"xids": {"abc": {"severity": "warn"}}}, "overrides.xids.abc"),
        ({"thresholds": {"xid_window_s": "soon"}}, "'soon' is not a number"),
    ],
)
def test_bad_override_names_the_key(overrides: dict, needle: str) -> None:
    with pytest.raises(InputError) as exc:
        load_policy(overrides)
    assert needle in str(exc.value)


def test_broken_catalog_file_is_input_error(tmp_path) -> None:
    (tmp_path / "validation").mkdir()
    (tmp_path / "validation" / "xid.yaml").write_text(
        "xids: {79: {resolution: NOPE, source: x}}\nresolutions: {}\ndefault: {severity: warn, action: none, source: x}\n"
    )
    (tmp_path / "validation" / "thresholds.yaml").write_text("thresholds: {}\nrules: {}\n")
    with pytest.raises(InputError) as exc:
        load_policy(root=tmp_path)
    assert "xid.yaml" in str(exc.value) and "xids.79.resolution" in str(exc.value)
