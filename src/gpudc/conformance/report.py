"""The conformance report: each node's state against its software profile, plus its verdicts.

`build_report` is pure (plan + collected states + past verdicts -> one dict); `canonical_json`
makes it the exact bytes that are signed. Every item is `{item, expected, found, conforms}`;
an item whose `expected` is null is recorded, not judged (VBIOS and NIC firmware: no profile
pins them). A node conforms when every judged item does; the site when every node does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpudc import __version__, files
from gpudc.catalog import Profile, current_catalog
from gpudc.conformance.collect import NodeState, required_services
from gpudc.conformance.profile_export import HELD_ROLES, canonical_json, profile_digest
from gpudc.errors import GpudcError, InputError
from gpudc.plan.types import Node, Plan

FORMAT = "gpudc-conformance/1"
#: Verdicts that count as passed validation (a warning is advice, not a failure).
GOOD_VERDICTS = ("pass", "warn")
#: The validator's check that carries the NCCL all_reduce measurement (level full).
PERF_CHECK = "nccl_busbw"
#: How many past runs of a node to look through for the newest performance measurement.
PERF_LOOKBACK = 50


@dataclass(frozen=True, slots=True)
class PastRun:
    """A node's verdict as the history holds it (gpudc.validate.history.PastVerdict, reduced)."""

    run: int
    time: str
    level: str
    verdict: str
    action: str
    findings: tuple[tuple[str, str, str], ...]  # (check, severity, message), info excluded


def upstream(version: str) -> str:
    """Debian version -> upstream: `1:4.5.2-1` -> `4.5.2`, `2.28.7-1+cuda13.0` -> `2.28.7`."""
    text = version.split(":", 1)[-1]
    return text.rsplit("-", 1)[0] if "-" in text else text


def _item(
    item: str, expected: str | None, found: str, note: str | None = None, conforms: bool | None = None
) -> dict[str, Any]:
    """One item; it conforms when found equals expected, unless the caller judges (`conforms`)."""
    if conforms is None:
        conforms = True if expected is None else expected == found
    entry: dict[str, Any] = {"item": item, "expected": expected, "found": found, "conforms": conforms}
    if note:
        entry["note"] = note
    return entry


def _installed(facts: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A package's dpkg facts when it is installed (state `i` in dpkg's abbreviation), else None."""
    packages = facts.get("packages")
    got = packages.get(name) if isinstance(packages, dict) else None
    return got if isinstance(got, dict) and str(got.get("status", ""))[1:2] == "i" else None


def _package_items(node: Node, facts: dict[str, Any]) -> list[dict[str, Any]]:
    known = isinstance(facts.get("packages"), dict)
    by_role = node.expected.packages_by_role
    held = {name for role in HELD_ROLES for name in by_role.get(role, {})}
    items: list[dict[str, Any]] = []
    for name, want in node.expected.packages.items():
        got = _installed(facts, name)
        if not known:
            items.append(_item(f"package:{name}", want, "unknown", "dpkg-query is not available"))
        elif got is None:
            raw = facts["packages"].get(name)
            state = f" (dpkg {raw.get('status')})" if isinstance(raw, dict) else ""
            items.append(_item(f"package:{name}", want, "not installed" + state))
        else:
            items.append(_item(f"package:{name}", want, str(got.get("version"))))
    for name in node.expected.packages:
        if name in held:
            got = _installed(facts, name)
            found = str(got.get("want") or "unknown") if got is not None else ("not installed" if known else "unknown")
            items.append(_item(f"hold:{name}", "hold", found))
    return items


def _package_upstream(node: Node, facts: dict[str, Any], role: str) -> tuple[str, str]:
    """(found upstream version, package) of the first package of a role the node pins."""
    for name in node.expected.packages_by_role.get(role, {}):
        got = _installed(facts, name)
        if got is not None:
            return upstream(str(got.get("version"))), name
        return ("not installed" if isinstance(facts.get("packages"), dict) else "unknown"), name
    return "unknown", ""


#: Driver package names by flavour (NVIDIA's apt names); `nvidia-driver-pinning-<br>` is neither.
_OPEN_DRIVER = re.compile(r"nvidia-open-\d+|nvidia-driver-\d+(?:-server)?-open")
_PROPRIETARY_DRIVER = re.compile(r"cuda-drivers-\d+|nvidia-driver-\d+(?:-server)?")


def _flavour(node: Node, facts: dict[str, Any]) -> tuple[str, str]:
    """(kernel module flavour, where it was read)."""
    module = facts.get("module") or {}
    if module.get("flavour") in ("open", "proprietary"):
        return str(module["flavour"]), f"read from {module.get('flavour_source') or 'the kernel'}"
    # No nvidia module visible in this kernel (a container shares its host's kernel): the
    # installed driver package says which flavour provisioning put on.
    for name in node.expected.packages_by_role.get("driver", {}):
        if _installed(facts, name) is None:
            continue
        for flavour, pattern in (("open", _OPEN_DRIVER), ("proprietary", _PROPRIETARY_DRIVER)):
            if pattern.fullmatch(name):
                return flavour, f"read from package {name} (no nvidia module in this kernel)"
    return "unknown", "no nvidia module loaded and no driver package installed"


def judge_node(node: Node, profile: Profile | None, facts: dict[str, Any]) -> list[dict[str, Any]]:
    """Every judged and recorded item of one reachable node, in a fixed order."""
    exp = node.expected
    items = _package_items(node, facts)
    nvml = facts.get("nvml") or {}
    module = facts.get("module") or {}
    driver = nvml.get("driver_version") or module.get("loaded_version")
    where = "read from " + ("NVML" if nvml.get("driver_version") else "the kernel module")
    items.append(_item("driver", exp.driver_version, str(driver or "unknown"),
                       where if driver else "neither NVML nor a loaded nvidia module answered"))
    flavour, source = _flavour(node, facts)
    items.append(_item("kernel_module", exp.kernel_module, flavour, source))
    cuda = profile.components.get("cuda") if profile is not None else None
    toolkits = facts.get("cuda_toolkits") or {}
    want_toolkit = (cuda.toolkit or cuda.version) if cuda is not None else None
    items.append(_item("cuda", want_toolkit, str(toolkits.get(exp.cuda_version, "not installed")),
                       f"/usr/local/cuda-{exp.cuda_version}/version.json"))
    components = profile.components if profile is not None else {}
    checks = [("nccl", "nccl", exp.nccl_version), ("dcgm", "dcgm", None)]
    if exp.fabric_manager:
        checks.append(("fabric_manager", "fabric_manager", None))
    if exp.imex:
        checks.append(("imex", "imex", None))
    for name, role, want in checks:
        want = want or (components[name].version if name in components else None)
        found, package = _package_upstream(node, facts, role)
        items.append(_item(name, want, found, f"package {package}" if package else None))
    services = facts.get("services")
    for unit in required_services(node):
        state = services.get(unit, "unknown") if isinstance(services, dict) else "unknown (no systemctl)"
        items.append(_item(f"service:{unit}", "active", str(state)))
    container = facts.get("container")
    running = set(facts.get("cmdline") or [])
    for param in facts.get("cmdline_configured") or []:
        if container:
            # the running kernel is the host's, not this node's: what is configured is recorded
            items.append(_item(f"kernel_parameter:{param}", None, "configured",
                               f"container ({container}): runs its host's kernel"))
        else:
            items.append(_item(f"kernel_parameter:{param}", "present", "present" if param in running else "missing"))
    for gpu in nvml.get("gpus") or []:
        items.append(_item(f"gpu{gpu.get('index')}:vbios", None, str(gpu.get("vbios") or "unknown"),
                           str(gpu.get("name") or "")))
    for nic in facts.get("nics") or []:
        items.append(_item(f"nic:{nic.get('device')}:firmware", None, str(nic.get("firmware") or "unknown"),
                           str(nic.get("board_id") or "")))
    return items


def _state(facts: dict[str, Any]) -> dict[str, Any]:
    """What the node said about itself, beyond the items (never the full kernel command line)."""
    nvml = facts.get("nvml") or {}
    module = facts.get("module") or {}
    return {
        "hostname": facts.get("hostname"),
        "arch": facts.get("arch"),
        "container": facts.get("container"),
        "gpu_source": nvml.get("source"),
        "gpu_count": len(nvml.get("gpus") or []),
        "cuda_driver_version": nvml.get("cuda_driver_version"),
        "module_loaded_version": module.get("loaded_version"),
        "module_license": module.get("license"),
        "cuda_toolkits": facts.get("cuda_toolkits") or {},
    }


def _validation(past: Sequence[PastRun]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(latest validation, newest performance measurement) of a node, from its past runs."""
    if not past:
        return None, None
    latest = past[0]
    validation = {
        "run": latest.run,
        "time": latest.time,
        "level": latest.level,
        "verdict": latest.verdict,
        "action": latest.action,
        "findings": [f"{sev} {check}: {msg}" for check, sev, msg in latest.findings],
    }
    performance = None
    for run in past:
        if run.level != "full":
            continue
        bad = [(sev, msg) for check, sev, msg in run.findings if check == PERF_CHECK]
        performance = {
            "run": run.run,
            "time": run.time,
            "check": PERF_CHECK,
            "verdict": "fail" if any(s == "fail" for s, _ in bad) else ("warn" if bad else "pass"),
            "findings": [msg for _, msg in bad],
        }
        break
    return validation, performance


def build_report(
    plan: Plan,
    nodes: Sequence[Node],
    states: Mapping[str, NodeState],
    history: Mapping[str, Sequence[PastRun]],
    generated: datetime | None = None,
    limit: str | None = None,
) -> dict[str, Any]:
    catalog = current_catalog()  # the one load_plan expanded the plan with
    used = sorted({n.profile for n in nodes})
    profiles = []
    for name in used:
        profile = catalog.profiles.get(name)
        if profile is None:
            raise InputError(f"profile {name!r}: named by the plan but not in the catalog")
        profiles.append({
            "name": name,
            "release": profile.release,
            "digest": profile_digest(profile),
            "components": {k: c.version for k, c in sorted(profile.components.items())},
        })
    out_nodes: list[dict[str, Any]] = []
    nonconformities: list[dict[str, Any]] = []
    for node in sorted(nodes, key=lambda n: n.name):
        state = states.get(node.name) or NodeState(node.name, None, "error: not collected")
        entry: dict[str, Any] = {
            "name": node.name,
            "sku": node.sku,
            "profile": node.profile,
            "os": node.os,
            "reachable": state.facts is not None,
        }
        if state.facts is None:
            items = [_item("reachable", "yes", "no", state.error)]
            entry["state"] = None
        else:
            try:
                items = judge_node(node, catalog.profiles.get(node.profile), state.facts)
                entry["state"] = _state(state.facts)
            except (AttributeError, TypeError, KeyError, ValueError) as exc:
                # the node's answer is input, not trusted: a malformed one is that node's problem
                items = [_item("collector", "readable output", "malformed output", f"{type(exc).__name__}")]
                entry["state"] = None
        validation, performance = _validation(history.get(node.name, ()))
        # pass, or warn (advice, not a failure), counts as passed validation
        found = validation["verdict"] if validation else "none recorded"
        items.append(_item("validation", "pass", found, None, found in GOOD_VERDICTS))
        if performance is not None:
            verdict = performance["verdict"]
            items.append(_item("performance", "pass", verdict, None, verdict in GOOD_VERDICTS))
        entry["validation"] = validation
        entry["performance"] = performance
        entry["items"] = items
        entry["conforms"] = all(i["conforms"] for i in items)
        out_nodes.append(entry)
        for i in items:
            if not i["conforms"]:
                nonconformities.append(
                    {"node": node.name, "item": i["item"], "expected": i["expected"], "found": i["found"]}
                )
    conforming = sum(1 for n in out_nodes if n["conforms"])
    unreachable = sum(1 for n in out_nodes if not n["reachable"])
    stamp = (generated or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    return {
        "format": FORMAT,
        "generator": f"gpudc {__version__}",
        "generated": stamp,
        "site": {
            "name": plan.site.name,
            "provider": plan.site.provider,
            "region": plan.site.region,
            "stack": plan.site.stack,
        },
        "signing": {"namespace": "gpudc-conformance", "principal": plan.site.name},
        "limit": limit or None,  # the --limit that chose the nodes (None: every node of the site)
        "profiles": profiles,
        "summary": {
            "nodes": len(out_nodes),
            "conforming": conforming,
            "non_conforming": len(out_nodes) - conforming,
            "unreachable": unreachable,
        },
        "conforms": conforming == len(out_nodes),
        "nonconformities": nonconformities,
        "nodes": out_nodes,
    }


def report_problems(doc: Any) -> list[str]:
    """Why a document is not a conformance report gpudc can read ([] when it is one)."""
    if not isinstance(doc, dict):
        return ["not a JSON object"]
    problems = []
    if doc.get("format") != FORMAT:
        problems.append(f"format: {doc.get('format')!r}, expected {FORMAT!r}")
    for key, kind in (("site", dict), ("nodes", list), ("profiles", list), ("nonconformities", list),
                      ("conforms", bool), ("summary", dict)):
        if not isinstance(doc.get(key), kind):
            problems.append(f"{key}: missing or not a {kind.__name__}")
    if not problems and not isinstance(doc["site"].get("name"), str):
        problems.append("site.name: missing")
    if not problems:
        problems += [f"nonconformities[{i}]: not an object" for i, p in enumerate(doc["nonconformities"])
                     if not isinstance(p, dict)]
        for i, node in enumerate(doc["nodes"]):
            if not isinstance(node, dict) or not isinstance(node.get("items"), list) \
                    or not isinstance(node.get("name"), str):
                problems.append(f"nodes[{i}]: not a node with a name and items")
    return problems


def recomputed_conformance(doc: dict[str, Any]) -> bool:
    """Whether every item of every node conforms, from the items themselves (not the summary)."""
    return bool(doc["nodes"]) and all(
        isinstance(item, dict) and item.get("conforms") is True for node in doc["nodes"] for item in node["items"]
    )


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomic(path, data, mode)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None


def render_html(doc: dict[str, Any], signature_file: str | None) -> str:
    from gpudc.render.env import environment

    try:
        template = environment().get_template("conformance/report.html.j2")
    except Exception as exc:  # a broken install, not bad input
        raise GpudcError(f"the conformance HTML template is missing or broken ({type(exc).__name__})") from None
    return template.render(doc=doc, signature_file=signature_file)


__all__ = [
    "FORMAT",
    "PastRun",
    "build_report",
    "canonical_json",
    "judge_node",
    "recomputed_conformance",
    "render_html",
    "report_problems",
    "upstream",
    "write_atomic",
]
