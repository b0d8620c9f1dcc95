"""`gpudc cabling check`: the cabled fabric (ibnetdiscover or LLDP) against the plan.

A link is a pair of endpoints, each (device, port) as the discovery tool names it. InfiniBand
(`ibnetdiscover`, topology or `-p` form, read by gpudc.render.discovery): a switch by the name
in its NodeDescription (`MF0;<name>:<model>/U1` -> `<name>`) and its port number (1..64 on a
QM9700), an HCA as "<host> <hca>" port 1 (rdma-ndd's "%h %d"; the plan's compute NIC names,
mlx5_N per the SKU's `compute_nic_names`, are the HCA names). Ethernet (`lldpctl -f json` or
`json0`): switch ports by their Cumulus name (swpN, swpNsM); a host's end by the host alone
(the plan does not know a host's Linux interface names). Findings: missing (planned, not
seen), extra (seen, not planned) and swapped (two planned cables whose far ends are
exchanged).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpudc.errors import InputError
from gpudc.plan.types import Plan, Switch
from gpudc.render import discovery
from gpudc.render.artifacts import breakout_factor, cumulus_port

End = tuple[str, str]
Link = frozenset[End]


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
    """Cables of `ibnetdiscover` output (either form), each end as (device name, port)."""
    return discovery.parse_ibnetdiscover(text, source).named_links()


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
    """`lldpctl -f json`/`json0` neighbors: local port -> (remote system name, remote port)."""
    return {n.local_port: (n.system_name, n.port) for n in discovery.parse_lldpctl(text, source)}


def _plan_name(name: str, known: set[str]) -> str:
    """A SysName as the plan names it: LLDP carries the system's hostname, often a FQDN."""
    name = name.strip()
    if name in known:
        return name
    short = name.split(".", 1)[0]
    return short if short in known else name


def _device_of(path: Path) -> str:
    name = path.name
    for suffix in (".json0", ".json", ".lldp"):
        name = name.removesuffix(suffix)
    return name


def planned_host_lldp(plan: Plan, host: str) -> set[Link]:
    """The switch ports a host's OS should see over LLDP: its NICs on Ethernet fabrics (not the
    BMC's port on the OOB network: the BMC, not the host OS, speaks on that one)."""
    switches = {s.name: s for s in plan.switches}
    ethernet = {f.name for f in plan.fabrics if f.kind == "ethernet"}
    out: set[Link] = set()
    for nic in plan.node(host).nics:
        sw = switches.get(nic.switch or "")
        if sw is None or nic.switch_port is None or nic.network == "oob" or sw.fabric not in ethernet:
            continue
        out.add(frozenset(((host, "-"), (sw.name, _switch_port(sw, plan, nic.switch_port)))))
    return out


def check_lldp(plan: Plan, paths: list[Path]) -> Report:
    """`lldpctl` output of switches (<switch>.json) and hosts (<host>.json), json or json0."""
    switches = {s.name for s in plan.switches}
    hosts = {n.name for n in plan.nodes}
    known = switches | hosts | {d.name for d in plan.devices}
    report = Report(", ".join(map(str, paths)), 0, 0)
    host_want: set[Link] = set()
    host_seen: set[Link] = set()
    for path in paths:
        device = _device_of(path)
        if device in hosts:
            host_want |= planned_host_lldp(plan, device)
            for n in discovery.parse_lldpctl(_read(path), str(path)):
                host_seen.add(frozenset(((device, "-"), (_plan_name(n.system_name, known), n.port))))
            continue
        if device not in switches:
            raise InputError(f"{path}: name the file <switch>.json or <host>.json; {device!r} is no switch "
                             f"of site {plan.site.name}, nor one of its hosts")
        _check_switch(plan, device, path, known, report)
    if host_want or host_seen:
        hosts_report = compare(host_want, host_seen, report.source)
        report.planned += hosts_report.planned
        report.observed += hosts_report.observed
        report.missing += hosts_report.missing
        report.extra += hosts_report.extra
        report.swapped += hosts_report.swapped
    return report


def _check_switch(plan: Plan, switch: str, path: Path, known: set[str], report: Report) -> None:
    want = planned_lldp(plan, switch)
    # eth0 is a Cumulus switch's management port (on the OOB network, not in this switch's
    # front-panel plan): only swp ports are compared
    seen = {port: (_plan_name(name, known), rport)
            for port, (name, rport) in parse_lldpctl(_read(path), str(path)).items() if port.startswith("swp")}
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
