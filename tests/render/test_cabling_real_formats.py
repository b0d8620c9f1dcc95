"""`gpudc cabling check` on discovery output in the formats real fabrics print.

Two kinds of input: the real public dumps under tests/fixtures/cabling/ (parsed, counted, and
named links checked), and renditions of the ibmini plan in those same formats (GUID-named
nodes, `MF0;<name>:MQM9700/U1` switches, `<host> mlx5_N` HCAs, SHARP aggregation nodes,
`ibnetdiscover -p` lines, lldpd json/json0) on which a correct fabric gives 0 differences
and a swap, a missing and an extra cable are each named.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gpudc.cli import main
from gpudc.errors import InputError
from gpudc.plan import load_plan
from gpudc.plan.types import Plan
from gpudc.render import discovery
from gpudc.render.cabling import check_ibnetdiscover, check_lldp, parse_lldpctl

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "cabling"
IBMINI = str(Path(__file__).parent / "data" / "Pulumi.ibmini.yaml")

# --------------------------------------------------------------------------- real dumps


def test_superpod_dump_parses_every_node_and_cable() -> None:
    fabric = discovery.parse_ibnetdiscover((FIX / "topograph-superpod.ibnetdiscover").read_text(), "superpod")
    kinds = [n.kind for n in fabric.nodes.values()]
    assert kinds.count("Switch") == 40 and kinds.count("Ca") == 582
    # 2228 port lines, every cable printed from both of its ends
    assert len(fabric.links) == 1114 and fabric.one_sided == 0
    cables = fabric.named_links()
    assert len(cables) == 1114 - 40  # one SHARP aggregation node per switch, on port 65: no cable
    assert frozenset({("A09-P1-IBLEAF-04-04", "1"), ("a08-p1-dgx-04-c01 mlx5_5", "1")}) in cables
    assert frozenset({("A09-P1-IBLEAF-04-04", "35"), ("A10-P1-IBSPINE-02", "32")}) in cables
    assert frozenset({("A09-P1-IBLEAF-04-02", "1"), ("a06-p1-dgx-02-c01 HCA-6", "1")}) in cables
    names = {end[0] for link in cables for end in link}
    assert not any(n.startswith("MF0;") for n in names)
    assert "MT4129 ConnectX7 Mellanox Technologies (H-e09d730300858d88)" in names  # unnamed HCA, by GUID
    assert not any(discovery.AGGREGATION_NODE in n for n in names)


def test_ports_form_dumps() -> None:
    osc = discovery.parse_ibnetdiscover((FIX / "infiniband_exporter-test.ibnetdiscover-p").read_text(), "osc")
    assert osc.form == "ports"
    assert osc.named_links() == {
        frozenset({("o0001 HCA-1", "1"), ("ib-i1l1s01", "10")}),
        frozenset({("o0002 HCA-1", "1"), ("ib-i1l1s01", "11")}),
        frozenset({("p0001 HCA-1", "1"), ("ib-i4l1s01", "35")}),
        frozenset({("ib-i1l1s01", "1"), ("ib-i1l2s01", "1")}),
    }
    hdr = discovery.parse_ibnetdiscover((FIX / "infiniband_exporter-test2.ibnetdiscover-p").read_text(), "hdr")
    # descriptions with stray spaces are trimmed; the links to SHARP aggregation nodes are no cables
    assert hdr.named_links() == {frozenset({("worker20 mlx5_3", "1"), ("5FB0405-leaf-IB01", "79")})}
    assert len(hdr.named_links(skip_internal=False)) == 3


def test_cumulus_json0_dumps() -> None:
    spine = parse_lldpctl((FIX / "suzieq-dual-bgp-spine01.json0").read_text(), "spine01")
    assert spine == {"swp1": ("leaf01", "swp1"), "swp2": ("leaf02", "swp1"), "swp3": ("leaf03", "swp1"),
                     "swp4": ("leaf04", "swp1"), "swp5": ("exit02", "swp1"), "swp6": ("exit01", "swp1")}
    leaf = parse_lldpctl((FIX / "suzieq-dual-bgp-leaf01.json0").read_text(), "leaf01")
    assert leaf == {"swp1": ("spine01", "swp1"), "swp2": ("spine02", "swp1"),
                    "swp3": ("leaf02", "swp3"), "swp4": ("leaf02", "swp4")}


def test_linux_host_json_dump() -> None:
    (n,) = discovery.parse_lldpctl((FIX / "lldpd-host.json").read_text(), "host")
    # lldpd on Linux sends the MAC as port ID and the interface name as port description
    assert (n.local_port, n.system_name, n.port_id_type, n.port) == ("eth0", "ns-2.example.com", "mac", "eth1")
    assert n.chassis_id == "00:00:00:00:00:02"


def test_switch_descriptions() -> None:
    assert discovery.switch_name("MF0;leaf-01:MQM9700/U1") == "leaf-01"
    assert discovery.switch_name("MF0;PG22B-R16-IB:Q3400_RA/U2") == "PG22B-R16-IB"
    assert discovery.switch_name(" 5FB0406-spine-IB03 ") == "5FB0406-spine-IB03"
    assert discovery.hca_name("node01.example.com mlx5_0") == ("node01", "mlx5_0")
    assert discovery.hca_name("MT4129 ConnectX7   Mellanox Technologies") is None


# --------------------------------------------------------------------------- renditions of a plan

IbCable = tuple[tuple[str, int], tuple[str, int]]  # ((device, port), (device, port)); hosts as "host hca"


@pytest.fixture(scope="module")
def plan() -> Plan:
    return load_plan(IBMINI)


def ib_cables(plan: Plan) -> list[IbCable]:
    nodes = {n.name for n in plan.nodes}
    out: list[IbCable] = []
    for c in plan.cables:
        if c.fabric != "compute":
            continue
        a = (f"{c.a_device} {c.a_port}", 1) if c.a_device in nodes else (c.a_device, int(c.a_port))
        b = (f"{c.b_device} {c.b_port}", 1) if c.b_device in nodes else (c.b_device, int(c.b_port))
        out.append((a, b))
    return out


class Rendition:
    """GUIDs, LIDs and NodeDescriptions as a QM9700 fabric with rdma-ndd hosts shows them."""

    def __init__(self, plan: Plan, cables: list[IbCable]) -> None:
        self.switches = [s.name for s in plan.switches if s.fabric == "compute"]
        self.cables = cables
        self.guid: dict[str, str] = {}
        for i, name in enumerate(self.switches):
            self.guid[name] = f"b8599f0300a1{i:04x}"
            self.guid[f"AN {name}"] = f"b8599f0300a2{i:04x}"
        hcas = sorted({e[0] for c in cables for e in c if " " in e[0]})
        for i, hca in enumerate(hcas):
            self.guid[hca] = f"946dae0300c0{i:04x}"
        self.lid = {k: n + 1 for n, k in enumerate(self.guid)}

    def desc(self, dev: str) -> str:
        if dev.startswith("AN "):
            return discovery.AGGREGATION_NODE
        if dev in self.switches:
            return f"MF0;{dev}:MQM9700/U1"
        host, hca = dev.split()
        return f"{host}.ibmini.example.internal {hca}" if host.endswith("n02") else dev  # rdma-ndd with a FQDN

    def ports(self, dev: str) -> list[tuple[int, str, int]]:
        out = [(a[1], b[0], b[1]) for a, b in self.cables if a[0] == dev]
        out += [(b[1], a[0], a[1]) for a, b in self.cables if b[0] == dev]
        if dev in self.switches:
            out.append((65, f"AN {dev}", 1))  # SHARP aggregation node
        return sorted(out)

    def topology(self) -> str:
        lines = ["#", "# Topology file: generated on Tue Dec  1 10:00:00 2026", "#",
                 f"# Initiated from node {self.guid['h1-a01-n01 mlx5_0']} port {self.guid['h1-a01-n01 mlx5_0']}", ""]
        for sw in self.switches:
            g = self.guid[sw]
            lines += ["vendid=0x2c9", "devid=0xd2f0", f"sysimgguid=0x{g}", f"switchguid=0x{g}({g})",
                      f'Switch\t65 "S-{g}"\t\t# "{self.desc(sw)}" enhanced port 0 lid {self.lid[sw]} lmc 0']
            for port, far, far_port in self.ports(sw):
                fg = self.guid[far]
                if far in self.switches:
                    lines.append(f'[{port}]\t"S-{fg}"[{far_port}]\t\t# "{self.desc(far)}" lid {self.lid[far]} 4xNDR')
                else:
                    lines.append(f'[{port}]\t"H-{fg}"[{far_port}]({fg}) \t\t# "{self.desc(far)}" lid {self.lid[far]} 4xNDR')
            lines.append("")
        for ca in [k for k in self.guid if k not in self.switches]:
            g = self.guid[ca]
            lines += ["vendid=0x2c9", "devid=0xa2dc", f"sysimgguid=0x{g}", f"caguid=0x{g}",
                      f'Ca\t1 "H-{g}"\t\t# "{self.desc(ca)}"']
            for port, far, far_port in self.ports(ca):
                lines.append(f'[{port}]({g}) \t"S-{self.guid[far]}"[{far_port}]\t\t# lid {self.lid[ca]} lmc 0 '
                             f'"{self.desc(far)}" lid {self.lid[far]} 4xNDR')
            lines.append("")
        return "\n".join(lines)

    def ports_report(self) -> str:
        """`ibnetdiscover -p`: one line per port, each cable from both ends, plus an empty port."""
        lines = []
        for dev in self.guid:
            kind = "SW" if dev in self.switches else "CA"
            for port, far, far_port in self.ports(dev):
                fkind = "SW" if far in self.switches else "CA"
                lines.append(f"{kind} {self.lid[dev]:5d} {port:2d} 0x{self.guid[dev]} 4x NDR - {fkind} {self.lid[far]:5d} "
                             f"{far_port:2d} 0x{self.guid[far]} ( '{self.desc(dev)}' - '{self.desc(far)}' )")
        sw = self.switches[0]
        lines.append(f"SW {self.lid[sw]:5d} 64 0x{self.guid[sw]} 4x ???                                    "
                     f"'{self.desc(sw)}'")
        return "\n".join(lines) + "\n"


def _check(tmp_path: Path, plan: Plan, cables: list[IbCable], form: str) -> tuple[int, str, dict[str, Any]]:
    r = Rendition(plan, cables)
    path = tmp_path / f"fabric.{form}"
    path.write_text(r.topology() if form == "topology" else r.ports_report())
    assert "MF0;ib-su01-leaf01:MQM9700/U1" in path.read_text()
    report_path = tmp_path / "report.json"
    code = main(["cabling", "check", "--stack", IBMINI, "--ibnetdiscover", str(path), "--json", str(report_path)])
    return code, path.read_text(), json.loads(report_path.read_text())


@pytest.mark.parametrize("form", ["topology", "ports"])
def test_correct_fabric_in_real_format_has_no_difference(
    tmp_path: Path, plan: Plan, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, data = _check(tmp_path, plan, ib_cables(plan), form)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "136 planned, 136 seen; 0 missing, 0 extra, 0 swapped pairs, 0 miswired - cabling matches the plan" in out
    assert data["missing"] == data["extra"] == data["swapped"] == []


@pytest.mark.parametrize("form", ["topology", "ports"])
def test_swap_missing_and_extra_are_each_named(
    tmp_path: Path, plan: Plan, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cables = ib_cables(plan)
    i = cables.index((("h1-a01-n01 mlx5_2", 1), ("ib-su01-leaf03", 1)))
    j = cables.index((("h1-a01-n02 mlx5_2", 1), ("ib-su01-leaf03", 2)))
    cables[i], cables[j] = (cables[i][0], cables[j][1]), (cables[j][0], cables[i][1])  # the two HCAs trade ports
    cables.remove((("ib-su01-leaf02", 33), ("ib-spine01", 17)))  # unplugged
    cables.append((("ib-su01-leaf04", 20), ("ib-spine02", 64)))  # nobody planned this one
    code, _, data = _check(tmp_path, plan, cables, form)
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r'SWAPPED  "h1-a01-n01 mlx5_2"\[1\] -- "ib-su01-leaf03"\[1\]  <->  '
                     r'"h1-a01-n02 mlx5_2"\[1\] -- "ib-su01-leaf03"\[2\]', out), out
    assert 'MISSING  "ib-spine01"[17] -- "ib-su01-leaf02"[33]' in out
    assert 'EXTRA    "ib-spine02"[64] -- "ib-su01-leaf04"[20]' in out
    assert "1 missing, 1 extra, 1 swapped pairs, 0 miswired" in out
    assert (len(data["swapped"]), len(data["missing"]), len(data["extra"])) == (1, 1, 1)


def test_old_switch_names_in_descriptions_still_read(plan: Plan, tmp_path: Path) -> None:
    # a switch whose NodeDescription was set to its bare name (no MF0; prefix) is read as that name
    text = Rendition(plan, ib_cables(plan)).topology().replace("MF0;ib-spine01:MQM9700/U1", "ib-spine01")
    path = tmp_path / "f.ibnetdiscover"
    path.write_text(text)
    assert check_ibnetdiscover(plan, path).problems == 0


# --------------------------------------------------------------------------- LLDP renditions


def switch_json0(plan: Plan, switch: str, swap: tuple[str, str] | None = None, drop: str | None = None) -> str:
    """A Cumulus switch's `lldpctl -f json0`: hosts announce a MAC port ID and the ifname as
    description (lldpd's default on Linux), switches an ifname port ID."""
    from gpudc.render.cabling import planned_lldp

    want = planned_lldp(plan, switch)
    if swap:
        a, b = swap
        want[a], want[b] = want[b], want[a]
    interfaces = []
    for k, (port, (far, far_port)) in enumerate(sorted(want.items())):
        if port == drop:
            continue
        pid = {"type": "ifname", "value": far_port} if far_port else {"type": "mac", "value": f"b8:3f:d2:6a:10:{k:02x}"}
        interfaces.append({
            "name": port, "via": "LLDP", "rid": str(k + 1), "age": "0 day, 02:13:07",
            "chassis": [{"id": [{"type": "mac", "value": f"02:00:00:00:01:{k:02x}"}],
                         "name": [{"value": f"{far}.ibmini.example.internal"}],
                         "descr": [{"value": "Ubuntu 24.04.1 LTS Linux 6.8.0-45-generic"}],
                         "capability": [{"type": "Station", "enabled": True}]}],
            "port": [{"id": [pid], "descr": [{"value": "enP6p3s0f0np0"}], "ttl": [{"value": "120"}]}],
        })
    interfaces.append({  # the management port, on the OOB switch: not part of the front panel
        "name": "eth0", "via": "LLDP", "rid": "9",
        "chassis": [{"id": [{"type": "mac", "value": "02:00:00:00:09:09"}], "name": [{"value": "h1-a01-oob"}]}],
        "port": [{"id": [{"type": "ifname", "value": "swp48"}], "descr": [{"value": "swp48"}]}],
    })
    return json.dumps({"lldp": [{"interface": interfaces}]}, indent=2) + "\n"


def host_json(neighbors: dict[str, tuple[str, str]]) -> str:
    """A Linux host's `lldpctl -f json`: one neighbor is an object, several a list."""
    entries = [{ifname: {"via": "LLDP", "rid": "1", "age": "0 day, 00:01:00",
                         "chassis": {sw: {"id": {"type": "mac", "value": "9c:05:91:aa:bb:cc"},
                                          "descr": "Cumulus Linux version 5.9.2 running on Nvidia SN5600"}},
                         "port": {"id": {"type": "ifname", "value": port}, "descr": port, "ttl": "120"}}}
               for ifname, (sw, port) in neighbors.items()]
    interface: object = entries[0] if len(entries) == 1 else entries
    return json.dumps({"lldp": {"interface": interface}}, indent=2) + "\n"


def _lldp(tmp_path: Path, plan: Plan, files: dict[str, str]) -> list[str]:
    paths = []
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        paths.append(tmp_path / name)
    return check_lldp(plan, paths).lines()


def test_lldp_correct_fabric_has_no_difference(tmp_path: Path, plan: Plan) -> None:
    lines = _lldp(tmp_path, plan, {
        "frontend-leaf01.json0": switch_json0(plan, "frontend-leaf01"),
        "h1-a01-n01.json": host_json({"enP6p3s0f0np0": ("frontend-leaf01", "swp1s0")}),
        "h1-a01-n02.json": host_json({"enP6p3s0f0np0": ("frontend-leaf01.ibmini.example.internal", "swp1s1")}),
    })
    assert lines[-1].endswith("0 missing, 0 extra, 0 swapped pairs, 0 miswired - cabling matches the plan"), lines


def test_lldp_swap_missing_and_extra_are_each_named(tmp_path: Path, plan: Plan) -> None:
    lines = _lldp(tmp_path, plan, {"frontend-leaf01.json0": switch_json0(plan, "frontend-leaf01", swap=("swp1s0", "swp1s1"))})
    assert lines[0] == ('SWAPPED  "frontend-leaf01"[swp1s0] -- "h1-a01-n01"[-]  <->  "frontend-leaf01"[swp1s1] -- '
                        '"h1-a01-n02"[-]  (the far ends of these two planned cables are exchanged)')
    lines = _lldp(tmp_path, plan, {"frontend-leaf01.json0": switch_json0(plan, "frontend-leaf01", drop="swp1s1")})
    assert 'MISSING  "frontend-leaf01"[swp1s1] -- "h1-a01-n02"[-]' in lines
    # seen from the hosts: the two cables swapped, then one missing and one extra
    lines = _lldp(tmp_path, plan, {
        "h1-a01-n01.json": host_json({"enP6p3s0f0np0": ("frontend-leaf01", "swp1s1")}),
        "h1-a01-n02.json": host_json({"enP6p3s0f0np0": ("frontend-leaf01", "swp1s0")}),
    })
    assert any(ln.startswith('SWAPPED  "frontend-leaf01"[swp1s0] -- "h1-a01-n01"[-]') for ln in lines), lines
    lines = _lldp(tmp_path, plan, {
        "h1-a01-n01.json": host_json({"enP6p3s0f0np0": ("frontend-leaf01", "swp1s0"),
                                      "enP6p3s0f1np1": ("frontend-leaf01", "swp7s1")}),
        "h1-a01-n02.json": "{\"lldp\": {}}\n",  # lldpctl with no neighbor
    })
    assert 'MISSING  "frontend-leaf01"[swp1s1] -- "h1-a01-n02"[-]' in lines
    assert 'EXTRA    "frontend-leaf01"[swp7s1] -- "h1-a01-n01"[-]' in lines
    assert lines[-1].endswith("1 missing, 1 extra, 0 swapped pairs, 0 miswired")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("cut.ibnetdiscover-p", "CA    44  1 0x0002c9030045f121 4x FDR - SW     2 17 0x0002c903006e1430 ( 'a HCA-1' - 'x' )\n"
                                "CA    45  1 0x0002c9030045f122 4x FDR - SW     2 18 0x0002c9\n",
         "line 2: not an `ibnetdiscover -p` port line"),
        ("cut.ibnetdiscover", 'Switch\t65 "S-b8599f0300a10000"\t\t# "MF0;leaf:MQM9700/U1" enhanced port 0 lid 1 lmc 0\n'
                              '[1]\t"H-946dae0300c00000"[1](946dae\n', "line 2: not an ibnetdiscover port line"),
        ("h1-a01-n01.json", '{"lldp": {"interface": {\n  "eth0": {"via": "LLDP"}\n}}}\n',
         "line 2: interface eth0: a neighbor without chassis/port"),
        ("frontend-leaf01.json0", '{"lldp": [{"interface": [\n', "line 2: not `lldpctl -f json` output"),
    ],
)
def test_bad_input_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    flag = "--lldp" if "json" in name else "--ibnetdiscover"
    assert main(["cabling", "check", "--stack", IBMINI, flag, str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: {message}" in err, err
    assert "Traceback" not in err and err.count("\n") == 1


def test_parsers_raise_input_error_not_exceptions() -> None:
    with pytest.raises(InputError, match="line 1"):
        discovery.parse_lldpctl('{"lldp": 3}', "x")
    with pytest.raises(InputError, match="no ibnetdiscover topology"):
        discovery.parse_ibnetdiscover("# only a comment\n", "x")
