"""Readers of fabric discovery output as real fabrics print it.

- `ibnetdiscover` (rdma-core infiniband-diags), both the topology form (`Switch`/`Ca` blocks
  whose nodes are named by GUID, "S-<guid>"/"H-<guid>", each NodeDescription in a comment) and
  the ports form of `ibnetdiscover -p` (one line per port: `CA lid port 0xguid 4x NDR - SW ...
  ( 'desc' - 'desc' )`). Formats: rdma-core's ibnetdiscover(8) "TOPOLOGY FILE FORMAT" and the
  dumps under tests/fixtures/cabling/.
- `lldpctl -f json` and `lldpctl -f json0` (lldpd; Cumulus Linux's `net show lldp json` prints
  the json0 structure), from a Linux host or a switch.

A NodeDescription names a device: NVIDIA/Mellanox switch firmware reports
`MF0;<name>:<model>/U<n>` (QM9700: `MF0;leaf-01:MQM9700/U1`), an HCA under rdma-core's
rdma-ndd `<host> <device>` (`node01 mlx5_0`, the host possibly a FQDN; MLNX_OFED's older
default was `<host> HCA-<n>`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from gpudc.errors import InputError

IbEnd = tuple[str, int]  # (node id, port number as the tool prints it)

_HEADER = re.compile(r'^(Switch|Ca|Router)\s+(\d+)\s+"([^"]+)"\s*(?:#\s*"([^"]*)")?')
_PORT = re.compile(
    r'^\[(\d+)\](?:\(([^)]*)\))?\s+"([^"]+)"\[(\d+)\](?:\(([^)]*)\))?\s*(?:#\s*(.*))?$'
)
_QUOTED = re.compile(r'"([^"]*)"')
# ibnetdiscover -p: a connected port, then an unconnected one (rdma-core's dump_ports_report)
_P_LINK = re.compile(
    r"^(CA|SW|RT)\s+(\d+)\s+(\d+)\s+(0x[0-9A-Fa-f]+)\s+(\S+)\s+(\S+)\s+-\s+"
    r"(CA|SW|RT)\s+(\d+)\s+(\d+)\s+(0x[0-9A-Fa-f]+)\s+\(\s*'(.*)'\s+-\s+'(.*)'\s*\)\s*$"
)
# (a line whose far end is cut short, "- SW 2 18 0x..", is neither)
_P_OPEN = re.compile(r"^(CA|SW|RT)\s+(\d+)\s+(\d+)\s+(0x[0-9A-Fa-f]+)\s+(\S+)\s+(\S+)\s+(?!-\s)(\S.*)$")
_KEYVAL = re.compile(r"^[a-z]+=")
_SWITCH_DESC = re.compile(r"^MF0;(?P<name>[^:]+):(?P<model>[^/]+)/U\d+$")
_HCA_DEV = re.compile(r"^(?:mlx\d+_\d+|mlx5_bond_\d+|HCA-\d+|[a-z]+\d*_\d+)$")
# SHARP's Aggregation Node is a virtual CA inside a Quantum switch (on the port after the last
# external one, 65 on a QM9700): its "link" is no cable (NVIDIA SHARP docs; topograph's dump)
AGGREGATION_NODE = "Mellanox Technologies Aggregation Node"


@dataclass(slots=True)
class IbNode:
    node_id: str  # "S-<guid>" / "H-<guid>" (topology form) or the port GUID (ports form)
    kind: str  # Switch | Ca | Router
    description: str


@dataclass(slots=True)
class IbFabric:
    nodes: dict[str, IbNode] = field(default_factory=dict)
    links: set[frozenset[IbEnd]] = field(default_factory=set)
    one_sided: int = 0  # links printed from one end only (a partial dump)
    form: str = "topology"  # topology | ports

    def name(self, node_id: str) -> str:
        node = self.nodes[node_id]
        return device_name(node.description, node.kind, node_id)

    def named_links(self, skip_internal: bool = True) -> set[frozenset[tuple[str, str]]]:
        """Links with each end as (device name, port): switch name or "<host> <hca>"."""
        out: set[frozenset[tuple[str, str]]] = set()
        for link in self.links:
            ends = tuple(link)
            if skip_internal and any(self.nodes[n].description == AGGREGATION_NODE for n, _ in ends):
                continue
            out.add(frozenset((self.name(n), str(p)) for n, p in ends))
        return out


def switch_name(description: str) -> str:
    """`MF0;leaf-01:MQM9700/U1` -> `leaf-01`; any other description as it is (stripped)."""
    text = description.strip()
    m = _SWITCH_DESC.match(text)
    return m.group("name") if m else text


def hca_name(description: str) -> tuple[str, str] | None:
    """`node01.example.com mlx5_0` -> (`node01`, `mlx5_0`); None when not `<host> <device>`."""
    parts = description.split()
    if len(parts) != 2 or not _HCA_DEV.match(parts[1]):
        return None
    host = parts[0].split(".", 1)[0] if not parts[0].replace(".", "").isdigit() else parts[0]
    return host, parts[1]


def device_name(description: str, kind: str, node_id: str) -> str:
    if kind == "Switch":
        return switch_name(description)
    hca = hca_name(description)
    if hca is not None:
        return f"{hca[0]} {hca[1]}"
    # an HCA whose NodeDescription was never set ("MT4129 ConnectX7   Mellanox Technologies"):
    # only its GUID tells it apart
    return f"{' '.join(description.split()) or 'unnamed'} ({node_id})"


def _add_link(fabric: IbFabric, seen: dict[frozenset[IbEnd], int], a: IbEnd, b: IbEnd) -> None:
    link = frozenset((a, b))
    seen[link] = seen.get(link, 0) + 1
    fabric.links.add(link)


def parse_ibnetdiscover(text: str, source: str) -> IbFabric:
    """Either form of `ibnetdiscover` output; raises InputError naming the line otherwise."""
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if _P_LINK.match(s) or (_P_OPEN.match(s) and not _HEADER.match(s)):
            return _parse_ports(text, source)
        break
    return _parse_topology(text, source)


def _parse_topology(text: str, source: str) -> IbFabric:
    fabric = IbFabric()
    seen: dict[frozenset[IbEnd], int] = {}
    far_desc: dict[str, tuple[str, str]] = {}  # peer id -> (kind, description from a comment)
    current: str | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            current = None
            continue
        if s.startswith("#"):
            continue
        m = _HEADER.match(s)
        if m:
            kind, node_id = m.group(1), m.group(3)
            current = node_id
            fabric.nodes[node_id] = IbNode(node_id, kind, m.group(4) if m.group(4) is not None else node_id)
            continue
        if s.startswith("["):
            p = _PORT.match(s)
            if p is None:
                raise InputError(f"line {lineno}: not an ibnetdiscover port line: {s[:80]!r}", source=source)
            if current is None:
                raise InputError(f"line {lineno}: a port line outside a Switch/Ca block: {s[:80]!r}", source=source)
            peer = p.group(3)
            quoted = _QUOTED.findall(p.group(6) or "")
            if quoted:
                kind = {"S": "Switch", "H": "Ca", "R": "Router"}.get(peer[:1], "Ca")
                far_desc.setdefault(peer, (kind, quoted[-1]))
            _add_link(fabric, seen, (current, int(p.group(1))), (peer, int(p.group(4))))
            continue
        if _KEYVAL.match(s) or s == "Non-Chassis Nodes" or re.match(r"^Chassis\s", s):
            continue  # vendid=, devid=, sysimgguid=, switchguid=, caguid=; -g grouping headers
        raise InputError(f"line {lineno}: not ibnetdiscover output: {s[:80]!r}", source=source)
    if not fabric.nodes:
        raise InputError("no ibnetdiscover topology found (expected 'Switch' and 'Ca' blocks)", source=source)
    for peer, (kind, desc) in far_desc.items():
        fabric.nodes.setdefault(peer, IbNode(peer, kind, desc))
    for link in fabric.links:
        for node_id, _ in link:
            fabric.nodes.setdefault(node_id, IbNode(node_id, "Ca", node_id))
    fabric.one_sided = sum(1 for n in seen.values() if n == 1)
    return fabric


def _parse_ports(text: str, source: str) -> IbFabric:
    fabric = IbFabric(form="ports")
    seen: dict[frozenset[IbEnd], int] = {}
    kinds = {"CA": "Ca", "SW": "Switch", "RT": "Router"}
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        m = _P_LINK.match(s)
        if m:
            a_id, b_id = m.group(4).lower(), m.group(10).lower()
            fabric.nodes.setdefault(a_id, IbNode(a_id, kinds[m.group(1)], m.group(11).strip()))
            fabric.nodes.setdefault(b_id, IbNode(b_id, kinds[m.group(7)], m.group(12).strip()))
            _add_link(fabric, seen, (a_id, int(m.group(3))), (b_id, int(m.group(9))))
            continue
        if _P_OPEN.match(s):
            continue  # a port with nothing on its far end: no cable
        raise InputError(f"line {lineno}: not an `ibnetdiscover -p` port line: {s[:80]!r}", source=source)
    if not fabric.nodes:
        raise InputError("no ports found in `ibnetdiscover -p` output", source=source)
    fabric.one_sided = sum(1 for n in seen.values() if n == 1)
    return fabric


# --------------------------------------------------------------------------- LLDP


@dataclass(slots=True)
class Neighbor:
    local_port: str  # the interface of the device that ran lldpctl
    system_name: str  # the neighbor's SysName (may be a FQDN)
    chassis_id: str
    port_id_type: str  # ifname | mac | local | ...
    port_id: str
    port_descr: str

    @property
    def port(self) -> str:
        """The neighbor's port by name: its ifname ID, else its description (lldpd on Linux
        sends the MAC as port ID and the ifname as description), else the ID."""
        if self.port_id_type == "ifname" or not self.port_descr:
            return self.port_id
        return self.port_descr


def _line_of(text: str, needle: str) -> int:
    at = text.find(needle)
    return text.count("\n", 0, at) + 1 if at >= 0 else 0


def _v(value: Any) -> str:
    """A json0 leaf ([{"value": x}]) or a json leaf (x, or a list of x: take the first)."""
    if isinstance(value, list):
        value = value[0] if value else ""
    if isinstance(value, dict):
        value = value.get("value", "")
    return "" if value is None else str(value)


def _chassis(chassis: Any) -> tuple[str, str]:
    """(SysName, chassis ID) of a json chassis ({name: {...}} or {"id": .., "name": ..}) or a
    json0 one ([{"id": [..], "name": [{"value": ..}]}])."""
    if isinstance(chassis, list):
        chassis = chassis[0] if chassis else {}
    if not isinstance(chassis, dict):
        raise TypeError("chassis")
    if "id" in chassis or ("name" in chassis and isinstance(chassis.get("name"), list)):
        cid = chassis.get("id", {})
        cid = cid[0] if isinstance(cid, list) and cid else cid
        name = _v(chassis.get("name", ""))
        value = _v(cid) if isinstance(cid, dict) else ""
        return name or value, value
    name, body = next(iter(chassis.items()))  # json: the SysName is the key
    cid = body.get("id", {}) if isinstance(body, dict) else {}
    return str(name), _v(cid) if isinstance(cid, dict) else ""


def _port(port: Any) -> tuple[str, str, str]:
    if isinstance(port, list):
        port = port[0] if port else {}
    if not isinstance(port, dict):
        raise TypeError("port")
    pid = port.get("id", {})
    if isinstance(pid, list):
        pid = pid[0] if pid else {}
    if not isinstance(pid, dict):
        raise TypeError("port.id")
    return str(pid.get("type", "")), _v(pid), _v(port.get("descr", ""))


def parse_lldpctl(text: str, source: str) -> list[Neighbor]:
    """`lldpctl -f json` or `-f json0` neighbors, in file order."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"line {exc.lineno}: not `lldpctl -f json` output ({exc.msg})", source=source) from None
    lldp = doc.get("lldp") if isinstance(doc, dict) else None
    if isinstance(lldp, list):  # json0: {"lldp": [{"interface": [...]}]}
        lldp = lldp[0] if lldp else {}
    if not isinstance(lldp, dict):
        raise InputError("line 1: not `lldpctl -f json` output (expected {\"lldp\": {\"interface\": ...}})",
                         source=source)
    interfaces = lldp.get("interface", [])
    entries: list[tuple[str, Any]] = []
    if isinstance(interfaces, dict):  # json with one neighbor, or keyed by interface
        interfaces = [interfaces] if "name" in interfaces and "chassis" in interfaces else \
            [{k: v} for k, v in interfaces.items()]
    if not isinstance(interfaces, list):
        raise InputError("line 1: lldp.interface is neither a list nor an object", source=source)
    for i, entry in enumerate(interfaces):
        if not isinstance(entry, dict):
            raise InputError(f"line {_line_of(text, 'interface')}: lldp.interface[{i}]: not an object", source=source)
        if "name" in entry and not isinstance(entry["name"], dict):  # json0: the name is a field
            entries.append((str(entry["name"]), entry))
        else:
            entries.extend((str(k), v) for k, v in entry.items())
    out: list[Neighbor] = []
    for ifname, data in entries:
        where = _line_of(text, f'"{ifname}"')
        try:
            if not isinstance(data, dict):
                raise TypeError(ifname)
            name, cid = _chassis(data["chassis"])
            ptype, pid, pdescr = _port(data["port"])
        except (KeyError, TypeError, StopIteration, AttributeError, IndexError):
            raise InputError(f"line {where}: interface {ifname}: a neighbor without chassis/port", source=source) from None
        out.append(Neighbor(ifname, name, cid, ptype, pid, pdescr))
    return out
