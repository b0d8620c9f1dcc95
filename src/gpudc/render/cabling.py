"""`gpudc cabling check`: the cabled fabric (ibnetdiscover or LLDP) against the plan.

A link is a pair of endpoints, each (node description, port) as the discovery tool names it:
InfiniBand switches by their node description (the switch name) and port number, HCAs as
"<host> <hca>" port 1 (rdma-core's default node description); Ethernet switch ports by
their Cumulus name (swpN, swpNsM). Findings: missing (planned, not seen), extra (seen, not
planned) and swapped (two planned cables whose far ends are exchanged).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpudc.errors import InputError
from gpudc.plan.types import Plan, Switch
from gpudc.render.artifacts import breakout_factor, cumulus_port

End = tuple[str, str]
Link = frozenset[End]

_HEADER = re.compile(r'^(Switch|Ca|Router)\s+(\d+)\s+"([^"]+)"\s*(?:#\s*"([^"]*)")?')
_PORT = re.compile(r'^\[(\d+)\](?:\(([0-9a-fA-Fx]+)\))?\s+"([^"]+)"\[(\d+)\](?:\(([0-9a-fA-Fx]+)\))?\s*(?:#\s*(.*))?$')
_QUOTED = re.compile(r'"([^"]*)"')


def fmt_end(end: End) -> str:
    return f'"{end[0]}"[{end[1]}]'


def fmt_link(link: Link) -> str:
    a, b = sorted(link)
    return f"{fmt_end(a)} -- {fmt_end(b)}"


@dataclass(slots=True)
class Report:
    source: str
    planned: int
    observed: int
    missing: list[Link] = field(default_factory=list)
    extra: list[Link] = field(default_factory=list)
    swapped: list[tuple[Link, Link]] = field(default_factory=list)  # planned pair found exchanged
    miswired: list[tuple[End, str, str]] = field(default_factory=list)  # end, planned far end, seen far end

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.swapped) + len(self.miswired)

    def lines(self) -> list[str]:
        out = []
        for a, b in self.swapped:
            out.append(f"SWAPPED  {fmt_link(a)}  <->  {fmt_link(b)}  (the far ends of these two planned cables are exchanged)")
        for end, want, seen in self.miswired:
            out.append(f"MISWIRED {fmt_end(end)}: planned {want}, seen {seen}")
        out.extend(f"MISSING  {fmt_link(link)}" for link in self.missing)
        out.extend(f"EXTRA    {fmt_link(link)}" for link in self.extra)
        out.append(
            f"{self.source}: {self.planned} planned, {self.observed} seen; {len(self.missing)} missing, "
            f"{len(self.extra)} extra, {len(self.swapped)} swapped pairs, {len(self.miswired)} miswired"
            + ("" if self.problems else " - cabling matches the plan")
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "planned": self.planned, "observed": self.observed,
            "missing": [sorted(map(list, link)) for link in self.missing],
            "extra": [sorted(map(list, link)) for link in self.extra],
            "swapped": [[sorted(map(list, a)), sorted(map(list, b))] for a, b in self.swapped],
            "miswired": [{"end": list(e), "planned": w, "seen": s} for e, w, s in self.miswired],
        }


# --------------------------------------------------------------------------- InfiniBand


def planned_ib_links(plan: Plan) -> set[Link]:
    nodes = {n.name for n in plan.nodes}
    links: set[Link] = set()
    if not any(f.name == "compute" and f.kind == "infiniband" for f in plan.fabrics):
        return links
    for c in plan.cables:
        if c.fabric != "compute":
            continue
        a: End = (f"{c.a_device} {c.a_port}", "1") if c.a_device in nodes else (c.a_device, c.a_port)
        b: End = (f"{c.b_device} {c.b_port}", "1") if c.b_device in nodes else (c.b_device, c.b_port)
        links.add(frozenset((a, b)))
    return links


def parse_ibnetdiscover(text: str, source: str) -> set[Link]:
    """Links of `ibnetdiscover` output, each endpoint by node description and port."""
    names: dict[str, str] = {}
    raw: list[tuple[str, str, str, str, int]] = []
    current: str | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            if not s:
                current = None
            continue
        m = _HEADER.match(s)
        if m:
            current = m.group(3)
            names[current] = m.group(4) if m.group(4) is not None else current
            continue
        if s.startswith("["):
            p = _PORT.match(s)
            if p is None or current is None:
                raise InputError(f"line {lineno}: not an ibnetdiscover port line: {s[:80]!r}", source=source)
            raw.append((current, p.group(1), p.group(3), p.group(4), lineno))
            # the far end's description, when the far end has no block of its own
            comment = p.group(6) or ""
            quoted = _QUOTED.findall(comment)
            if quoted and p.group(3) not in names:
                names.setdefault(f"?{p.group(3)}", quoted[-1])
            continue
        if "=" in s and re.match(r"^[a-z]+=", s):
            continue  # vendid=, devid=, sysimgguid=, switchguid=, caguid=
        raise InputError(f"line {lineno}: not ibnetdiscover output: {s[:80]!r}", source=source)
    if not names:
        raise InputError("no ibnetdiscover topology found (expected 'Switch' and 'Ca' blocks)", source=source)

    def desc(node_id: str) -> str:
        text = names.get(node_id) or names.get(f"?{node_id}") or node_id
        host, sep, hca = text.partition(" ")
        if sep and "." in host and re.fullmatch(r"mlx5_\d+|[a-z]+\d+_\d+", hca):
            return f"{host.split('.', 1)[0]} {hca}"  # rdma-ndd's "%h %d" with an FQDN host name
        return text

    links: set[Link] = set()
    for local, port, remote, rport, _ in raw:
        links.add(frozenset(((desc(local), port), (desc(remote), rport))))
    return links


def compare(planned: set[Link], observed: set[Link], source: str) -> Report:
    report = Report(source, len(planned), len(observed))
    missing = planned - observed
    extra = observed - planned
    peer: dict[End, End] = {}
    for link in planned:
        a, b = tuple(link)
        peer[a], peer[b] = b, a
    used_missing: set[Link] = set()
    used_extra: set[Link] = set()
    for link in sorted(extra, key=lambda lk: sorted(lk)):
        if link in used_extra:
            continue
        x, y = sorted(link)
        px, py = peer.get(x), peer.get(y)
        if px is None or py is None:
            continue
        mirror: Link = frozenset((px, py))
        m1: Link = frozenset((x, px))
        m2: Link = frozenset((y, py))
        if mirror in extra and mirror not in used_extra and m1 in missing and m2 in missing and m1 != m2:
            report.swapped.append((m1, m2))
            used_extra |= {link, mirror}
            used_missing |= {m1, m2}
    report.missing = sorted(missing - used_missing, key=lambda lk: sorted(lk))
    report.extra = sorted(extra - used_extra, key=lambda lk: sorted(lk))
    return report


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def check_ibnetdiscover(plan: Plan, path: Path) -> Report:
    planned = planned_ib_links(plan)
    if not planned:
        raise InputError(f"{path}: site {plan.site.name} has no InfiniBand compute fabric to compare with")
    return compare(planned, parse_ibnetdiscover(_read(path), str(path)), str(path))


# --------------------------------------------------------------------------- LLDP


def _switch_port(sw: Switch, plan: Plan, port: str) -> str:
    rate = next((f.rate_gbps for f in plan.fabrics if f.name == sw.fabric), 0)
    return cumulus_port(port, breakout_factor(sw, rate))


def planned_lldp(plan: Plan, switch: str) -> dict[str, tuple[str, str | None]]:
    """Cumulus port of `switch` -> (far device, far switch port or None for a host)."""
    switches = {s.name: s for s in plan.switches}
    sw = switches[switch]
    out: dict[str, tuple[str, str | None]] = {}
    for c in plan.cables:
        if switch not in (c.a_device, c.b_device):
            continue
        local, far, far_port = (c.a_port, c.b_device, c.b_port) if c.a_device == switch else (c.b_port, c.a_device, c.a_port)
        far_sw = switches.get(far)
        out[_switch_port(sw, plan, local)] = (far, _switch_port(far_sw, plan, far_port) if far_sw else None)
    return out


def parse_lldpctl(text: str, source: str) -> dict[str, tuple[str, str]]:
    """`lldpctl -f json` neighbors: local port -> (remote system name, remote port)."""
    try:
        doc = json.loads(text)
        interfaces = doc["lldp"].get("interface", [])
    except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
        raise InputError("not `lldpctl -f json` output (expected {\"lldp\": {\"interface\": ...}})", source=source) from None
    if isinstance(interfaces, dict):
        interfaces = [{k: v} for k, v in interfaces.items()]
    out: dict[str, tuple[str, str]] = {}
    for i, entry in enumerate(interfaces):
        if not isinstance(entry, dict):
            raise InputError(f"lldp.interface[{i}]: not an object", source=source)
        for ifname, data in entry.items():
            try:
                chassis = data["chassis"]
                name = next(iter(chassis)) if "id" not in chassis else chassis.get("name", chassis["id"]["value"])
                port = data["port"]
                pid = port.get("id", {})
                rport = pid.get("value") if pid.get("type") == "ifname" else port.get("descr") or pid.get("value", "")
            except (KeyError, TypeError, StopIteration, AttributeError):
                raise InputError(f"lldp.interface[{i}].{ifname}: no chassis/port", source=source) from None
            out[str(ifname)] = (str(name), str(rport))
    return out


def check_lldp(plan: Plan, paths: list[Path]) -> Report:
    switches = {s.name for s in plan.switches}
    report = Report(", ".join(map(str, paths)), 0, 0)
    for path in paths:
        switch = path.name.removesuffix(".json")
        if switch not in switches:
            raise InputError(f"{path}: name the file <switch>.json; {switch!r} is no switch of site {plan.site.name}")
        want = planned_lldp(plan, switch)
        seen = parse_lldpctl(_read(path), str(path))
        report.planned += len(want)
        report.observed += len(seen)
        wrong: dict[str, tuple[tuple[str, str | None], tuple[str, str]]] = {}
        for port, (far, far_port) in sorted(want.items()):
            got = seen.get(port)
            if got is None:
                report.missing.append(frozenset(((switch, port), (far, far_port or "-"))))
            elif got[0] != far or (far_port is not None and got[1] != far_port):
                wrong[port] = ((far, far_port), got)
        for port, got in sorted(seen.items()):
            if port not in want:
                report.extra.append(frozenset(((switch, port), got)))
        done: set[str] = set()
        for port, ((far, far_port), got) in sorted(wrong.items()):
            if port in done:
                continue
            partner = next((q for q, ((f2, _), g2) in wrong.items()
                            if q != port and q not in done and g2[0] == far and got[0] == f2), None)
            if partner is not None:
                (f2, fp2), _ = wrong[partner]
                report.swapped.append((frozenset(((switch, port), (far, far_port or "-"))),
                                       frozenset(((switch, partner), (f2, fp2 or "-")))))
                done |= {port, partner}
            else:
                want_s = f"{far}:{far_port}" if far_port else far
                report.miswired.append(((switch, port), want_s, f"{got[0]}:{got[1]}"))
                done.add(port)
    return report
