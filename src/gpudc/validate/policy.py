"""The validator's policy: XID actions and check thresholds, as data from catalog/validation/.

`load_policy(overrides)` reads catalog/validation/xid.yaml and thresholds.yaml and applies a
site's overrides, a dict of the same shape:

    {"thresholds": {"xid_window_s": 3600},               # or {"xid_window_s": {"value": 3600}}
     "rules": {"persistence_off": {"severity": "fail"}},
     "xids": {94: {"severity": "fail", "action": "reset_gpu"}},
     "resolutions": {"RESTART_APP": {"severity": "info"}},
     "default": {"severity": "info"}}

An unknown key or a bad value raises InputError naming it (`overrides.rules.foo: unknown rule`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import yaml

from gpudc.catalog import overlay_dir, shipped_catalog_dir
from gpudc.errors import InputError
from gpudc.validate.types import ACTION_ORDER, SEVERITY_ORDER, Action, Severity


@dataclass(frozen=True, slots=True)
class Rule:
    severity: Severity
    action: Action
    source: str


@dataclass(frozen=True, slots=True)
class XidRule:
    code: int
    name: str
    resolution: str
    severity: Severity
    action: Action
    source: str


@dataclass(frozen=True, slots=True)
class Policy:
    xids: dict[int, XidRule]
    xid_default: Rule
    resolutions: dict[str, Rule]
    thresholds: dict[str, float]
    rules: dict[str, Rule]
    catalog_source: str = ""

    def xid(self, code: int) -> XidRule:
        found = self.xids.get(code)
        if found is not None:
            return found
        d = self.xid_default
        return XidRule(code, "UNKNOWN", "", d.severity, d.action, d.source)

    def rule(self, name: str) -> Rule:
        return self.rules[name]

    def threshold(self, name: str) -> float:
        return self.thresholds[name]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(str(exc).splitlines()[0], source=str(path)) from None
    if not isinstance(data, dict):
        raise InputError("expected a mapping at the top level", source=str(path))
    return data


def _severity(value: Any, where: str, problems: list[str]) -> Severity:
    if value not in SEVERITY_ORDER:
        problems.append(f"{where}: severity {value!r} is not one of {', '.join(SEVERITY_ORDER)}")
        return "warn"
    return cast(Severity, value)


def _action(value: Any, where: str, problems: list[str]) -> Action:
    if value not in ACTION_ORDER:
        problems.append(f"{where}: action {value!r} is not one of {', '.join(ACTION_ORDER)}")
        return "none"
    return cast(Action, value)


def _rule(body: Any, where: str, problems: list[str], base: Rule | None = None) -> Rule:
    if not isinstance(body, dict):
        problems.append(f"{where}: expected a mapping with severity, action, source")
        return base or Rule("warn", "none", "")
    allowed = {"severity", "action", "source"}
    for key in body:
        if key not in allowed:
            problems.append(f"{where}.{key}: unknown key (expected {', '.join(sorted(allowed))})")
    if base is None:
        for key in ("severity", "action", "source"):
            if key not in body:
                problems.append(f"{where}: missing {key}")
        base = Rule("warn", "none", "")
    severity = _severity(body["severity"], where, problems) if "severity" in body else base.severity
    action = _action(body["action"], where, problems) if "action" in body else base.action
    source = str(body.get("source", base.source if base.source else "site override"))
    return Rule(severity, action, source)


def _number(value: Any, where: str, problems: list[str]) -> float:
    if isinstance(value, dict):
        extra = set(value) - {"value", "source"}
        if extra or "value" not in value:
            problems.append(f"{where}: expected {{value, source}}")
            return 0.0
        value = value["value"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{where}: {value!r} is not a number")
        return 0.0
    return float(value)


def _xid_code(key: Any, where: str, problems: list[str]) -> int | None:
    try:
        code = int(key)
    except (TypeError, ValueError):
        problems.append(f"{where}.{key}: an Xid code must be an integer")
        return None
    if code <= 0:
        problems.append(f"{where}.{key}: an Xid code must be positive")
        return None
    return code


def _base_policy(root: Path) -> Policy:
    xid_path = root / "validation" / "xid.yaml"
    thr_path = root / "validation" / "thresholds.yaml"
    xdata = _read(xid_path)
    tdata = _read(thr_path)

    problems: list[str] = []
    resolutions = {
        str(name): _rule(body, f"resolutions.{name}", problems)
        for name, body in (xdata.get("resolutions") or {}).items()
    }
    default = _rule(xdata.get("default"), "default", problems)
    xids: dict[int, XidRule] = {}
    for key, body in (xdata.get("xids") or {}).items():
        where = f"xids.{key}"
        code = _xid_code(key, "xids", problems)
        if code is None or not isinstance(body, dict):
            if code is not None:
                problems.append(f"{where}: expected a mapping")
            continue
        resolution = str(body.get("resolution", ""))
        if resolution not in resolutions:
            problems.append(f"{where}.resolution: {resolution!r} is not in resolutions")
            continue
        if "source" not in body:
            problems.append(f"{where}: missing source")
        base = resolutions[resolution]
        sev = _severity(body["severity"], where, problems) if "severity" in body else base.severity
        act = _action(body["action"], where, problems) if "action" in body else base.action
        xids[code] = XidRule(
            code, str(body.get("name", "")), resolution, sev, act, str(body.get("source", ""))
        )
    if problems:
        raise InputError(problems, source=str(xid_path))

    thresholds: dict[str, float] = {}
    for name, body in (tdata.get("thresholds") or {}).items():
        if not isinstance(body, dict) or "source" not in body:
            problems.append(f"thresholds.{name}: expected {{value, source}}")
            continue
        thresholds[str(name)] = _number(body, f"thresholds.{name}", problems)
    rules = {
        str(name): _rule(body, f"rules.{name}", problems) for name, body in (tdata.get("rules") or {}).items()
    }
    if problems:
        raise InputError(problems, source=str(thr_path))
    return Policy(xids, default, resolutions, thresholds, rules, str(xdata.get("catalog_source", "")))


def _apply(policy: Policy, overrides: dict[str, Any]) -> Policy:
    problems: list[str] = []
    known = {"thresholds", "rules", "xids", "resolutions", "default"}
    thresholds = dict(policy.thresholds)
    rules = dict(policy.rules)
    xids = dict(policy.xids)
    resolutions = dict(policy.resolutions)
    default = policy.xid_default
    for section, body in overrides.items():
        where = f"overrides.{section}"
        if section not in known:
            problems.append(f"{where}: unknown key (expected one of {', '.join(sorted(known))})")
            continue
        if not isinstance(body, dict):
            problems.append(f"{where}: expected a mapping")
            continue
        if section == "default":
            default = _rule(body, where, problems, base=default)
            continue
        for key, value in body.items():
            item = f"{where}.{key}"
            if section == "thresholds":
                if key not in thresholds:
                    problems.append(f"{item}: unknown threshold")
                else:
                    thresholds[key] = _number(value, item, problems)
            elif section == "rules":
                if key not in rules:
                    problems.append(f"{item}: unknown rule")
                else:
                    rules[key] = _rule(value, item, problems, base=rules[key])
            elif section == "resolutions":
                if key not in resolutions:
                    problems.append(f"{item}: unknown resolution")
                else:
                    resolutions[key] = _rule(value, item, problems, base=resolutions[key])
            else:  # xids
                code = _xid_code(key, where, problems)
                if code is None:
                    continue
                old = policy.xid(code)
                base = Rule(old.severity, old.action, old.source)
                new = _rule(value, item, problems, base=base)
                xids[code] = replace(old, severity=new.severity, action=new.action, source=new.source)
    if problems:
        raise InputError(problems)
    # a resolution override reaches every row that uses it and has no own severity/action override
    for code, row in list(xids.items()):
        if row.resolution in overrides.get("resolutions", {}) and code not in overrides.get("xids", {}):
            res = resolutions[row.resolution]
            xids[code] = replace(row, severity=res.severity, action=res.action)
    return Policy(xids, default, resolutions, thresholds, rules, policy.catalog_source)


def _overlay_policy(policy: Policy, overlay: Path) -> Policy:
    """A project overlay's validation/thresholds.yaml: thresholds and rules, each with its source."""
    path = overlay / "validation" / "thresholds.yaml"
    if not path.exists():
        return policy
    data = _read(path)
    problems = []
    for section, body in data.items():
        if section not in ("thresholds", "rules") or not isinstance(body, dict):
            problems.append(f"{section}: an overlay's thresholds.yaml holds `thresholds:` and `rules:` mappings")
            continue
        for name, entry in body.items():
            if not isinstance(entry, dict) or not entry.get("source"):
                problems.append(f"{section}.{name}: an overlay entry needs its `source:`")
    if problems:
        raise InputError(problems, source=str(path))
    try:
        return _apply(policy, data)
    except InputError as exc:
        raise InputError([p.removeprefix("overrides.") for p in exc.problems], source=str(path)) from None


def load_policy(overrides: dict[str, Any] | None = None, root: Path | None = None) -> Policy:
    """The catalog's policy (shipped, then the project overlay's) with a site's overrides applied."""
    if root is not None:
        policy = _base_policy(root)
    else:
        policy = _base_policy(shipped_catalog_dir())
        overlay = overlay_dir()
        if overlay is not None:
            policy = _overlay_policy(policy, overlay)
    if overrides:
        if not isinstance(overrides, dict):
            raise InputError("overrides: expected a mapping")
        policy = _apply(policy, overrides)
    return policy
