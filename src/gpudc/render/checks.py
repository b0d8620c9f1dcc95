"""check_tree: the real consumers' checkers on a rendered tree, plus invariants.

kea-dhcp4 -t (Debian kea-dhcp4-server), cloud-init's schema validator (Debian cloud-init),
named-checkzone and named-checkconf (Debian bind9-utils), debconf-set-selections -c for
preseed files, gpudc's JSON schema for NVUE startup.yaml, FRR's own parser for frr.conf
(`vtysh --dryrun`, Debian frr), netplan's own parser for autoinstall's network
(`netplan generate`, Debian netplan.io), and invariants no checker covers. A checker that is not installed is reported as `unavailable`,
never as passed. Output that could quote a secret is redacted before it is reported.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import yaml

from gpudc.render.env import templates_dir

TIMEOUT_S = 120
_PRIVATE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)
_ESCAPED_PRIVATE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(\\n|[^\"'])*?-----END [A-Z ]*PRIVATE KEY-----")
_BLOB = re.compile(r"[A-Za-z0-9+/=]{60,}")


def redact(text: str) -> str:
    """Text with private key blocks and long base64 runs replaced."""
    text = _PRIVATE.sub("<private key redacted>", text)
    text = _ESCAPED_PRIVATE.sub("<private key redacted>", text)
    return _BLOB.sub("<redacted>", text)


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: str  # ok | failed | unavailable
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def _run(argv: list[str], stdin: str | None = None) -> tuple[int, str]:
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]} timed out after {TIMEOUT_S} s"
    return proc.returncode, redact((proc.stdout + proc.stderr).strip())


def system_tool(name: str) -> str | None:
    """A Debian checker's path: on PATH, else in /usr/sbin or /usr/bin (root's tools off a user's PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def _kea(root: Path) -> list[CheckResult]:
    conf = root / "dhcp" / "kea-dhcp4.conf"
    if not conf.is_file():
        return []
    binary = system_tool("kea-dhcp4")
    if binary is None:
        return [CheckResult("kea-dhcp4 -t", "unavailable", "kea-dhcp4 not installed (Debian kea-dhcp4-server)")]
    rc, out = _run([binary, "-t", str(conf)])
    errors = [line for line in out.splitlines() if "ERROR" in line or "FATAL" in line or "error" in line.lower()]
    if rc != 0:
        return [CheckResult("kea-dhcp4 -t", "failed", "\n".join(errors[-5:] or out.splitlines()[-5:]))]
    return [CheckResult("kea-dhcp4 -t", "ok", str(conf.relative_to(root)))]


def frr_binary() -> str | None:
    """FRR's vtysh (Debian frr), whose --dryrun parses a config file with FRR's own command tree."""
    return system_tool("vtysh")


def frr_problems(path: Path) -> list[str]:
    """What FRR's own parser rejects in one frr.conf (`vtysh --dryrun -f`, no daemon needed)."""
    binary = frr_binary()
    if binary is None:
        raise FileNotFoundError("vtysh (Debian frr) is not installed")
    rc, out = _run([binary, "--dryrun", "-f", str(path)])
    if rc == 0:
        return []
    return [line for line in out.splitlines() if line.strip()] or [f"vtysh --dryrun exited {rc}"]


def _frr(root: Path) -> list[CheckResult]:
    files = sorted((root / "switches").glob("*/frr.conf"))
    if not files:
        return []
    if frr_binary() is None:
        return [CheckResult("vtysh --dryrun", "unavailable", "vtysh not installed (Debian frr)")]
    problems = [f"{f.relative_to(root)}: {p}" for f in files for p in frr_problems(f)]
    if problems:
        return [CheckResult("vtysh --dryrun", "failed", "\n".join(problems[:10]))]
    return [CheckResult("vtysh --dryrun", "ok", f"{len(files)} FRR configs")]


# Runs under the system python3 that Debian's cloud-init is installed for: the same validator
# as `cloud-init schema --config-file`, once for many files (the CLI costs ~0.2 s a file).
_CLOUD_INIT_SCRIPT = r"""
import json, sys, yaml
from cloudinit.config.schema import SchemaValidationError, get_schema, validate_cloudconfig_schema
schema = get_schema()
out = {}
for path in sys.argv[1:]:
    problems = []
    try:
        text = open(path).read()
        if not text.startswith("#cloud-config"):
            problems.append("does not start with #cloud-config")
        doc = yaml.safe_load(text)
        docs = [("", doc)]
        if isinstance(doc, dict) and isinstance(doc.get("autoinstall"), dict) and "user-data" in doc["autoinstall"]:
            docs.append(("autoinstall.user-data: ", doc["autoinstall"]["user-data"]))
        for prefix, cfg in docs:
            if not isinstance(cfg, dict):
                problems.append(prefix + "not a mapping")
                continue
            try:
                validate_cloudconfig_schema(cfg, schema, strict=True, log_deprecations=False)
            except SchemaValidationError as exc:
                problems.append(prefix + str(exc))
    except Exception as exc:
        problems.append(type(exc).__name__ + ": " + str(exc)[:300])
    out[path] = problems
json.dump(out, sys.stdout)
"""


@cache
def _cloud_init_python() -> str | None:
    """The interpreter Debian's cloud-init runs under (its shebang)."""
    binary = shutil.which("cloud-init")
    if binary is None:
        return None
    first = Path(binary).read_text(errors="replace").splitlines()[0]
    return first[2:].strip().split()[0] if first.startswith("#!") else None


def _cloud_init(root: Path) -> list[CheckResult]:
    files = sorted((root / "pxe" / "nodes").glob("*/user-data"))
    if not files:
        return []
    python = _cloud_init_python()
    if python is None:
        return [CheckResult("cloud-init schema", "unavailable", "cloud-init not installed (Debian cloud-init)")]
    results = []
    bad_mode = [f for f in files if f.stat().st_mode & 0o077]
    if bad_mode:
        results.append(CheckResult("user-data mode 0600", "failed",
                                   ", ".join(str(f.relative_to(root)) for f in bad_mode[:5])))
    else:
        results.append(CheckResult("user-data mode 0600", "ok", f"{len(files)} files"))
    problems: list[str] = []
    for start in range(0, len(files), 500):
        batch = files[start:start + 500]
        rc, out = _run([python, "-c", _CLOUD_INIT_SCRIPT, *map(str, batch)])
        if rc != 0:
            return [*results, CheckResult("cloud-init schema", "failed", out[-400:])]
        for path, errs in json.loads(out).items():
            problems.extend(f"{Path(path).relative_to(root)}: {redact(e)}" for e in errs)
    if problems:
        results.append(CheckResult("cloud-init schema", "failed", "\n".join(problems[:10])))
    else:
        results.append(CheckResult("cloud-init schema", "ok", f"{len(files)} user-data files (and autoinstall user-data)"))
    return results


def _shape(value: Any) -> Any:
    """A netplan document with its values blanked: nodes of one pool and homing share one shape."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def _netplan(root: Path) -> list[CheckResult]:
    """autoinstall's `network` of every node through netplan's own parser (`netplan generate --root-dir`),
    once per distinct shape (its values blanked), so a big site costs a few runs."""
    shapes: dict[str, tuple[Path, Any]] = {}
    for path in sorted((root / "pxe" / "nodes").glob("*/user-data")):
        doc = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        network = doc.get("autoinstall", {}).get("network") if isinstance(doc, dict) else None
        if network is not None:
            shapes.setdefault(json.dumps(_shape(network), sort_keys=True), (path, network))
    if not shapes:
        return []
    binary = system_tool("netplan")
    if binary is None:
        return [CheckResult("netplan generate", "unavailable", "netplan not installed (Debian netplan.io)")]
    problems = []
    for path, network in shapes.values():
        with tempfile.TemporaryDirectory(prefix="gpudc-netplan-") as tmp:
            conf = Path(tmp) / "etc" / "netplan" / "50-gpudc.yaml"
            conf.parent.mkdir(parents=True)
            conf.write_text(yaml.safe_dump({"network": network}))
            conf.chmod(0o600)
            rc, out = _run([binary, "generate", "--root-dir", tmp])
            if rc != 0:
                problems.append(f"{path.relative_to(root)}: {out.replace(str(conf), 'network')[-300:]}")
    if problems:
        return [CheckResult("netplan generate", "failed", "\n".join(problems[:10]))]
    return [CheckResult("netplan generate", "ok", f"{len(shapes)} network shapes of autoinstall user-data")]


def _zones(root: Path) -> list[CheckResult]:
    files = sorted((root / "dns").glob("db.*"))
    if not files:
        return []
    binary = system_tool("named-checkzone")
    if binary is None:
        return [CheckResult("named-checkzone", "unavailable", "named-checkzone not installed (Debian bind9-utils)")]
    failures = []
    for f in files:
        zone = f.name.removeprefix("db.")
        rc, out = _run([binary, "-k", "fail", "-n", "fail", zone, str(f)])
        if rc != 0:
            failures.append(f"{f.relative_to(root)}: {out.splitlines()[-1] if out else rc}")
    results = [CheckResult("named-checkzone", "failed", "\n".join(failures[:10])) if failures
               else CheckResult("named-checkzone", "ok", f"{len(files)} zones")]
    conf = root / "dns" / "named.conf.gpudc"
    checkconf = system_tool("named-checkconf")
    if conf.is_file() and checkconf is not None:
        with tempfile.TemporaryDirectory(prefix="gpudc-named-") as tmp:
            wrapper = Path(tmp) / "named.conf"
            dns = (root / "dns").resolve()
            wrapper.write_text(f'options {{ directory "{dns}"; }};\ninclude "{dns / conf.name}";\n')
            rc, out = _run([checkconf, str(wrapper)])
        results.append(CheckResult("named-checkconf", "failed" if rc else "ok",
                                   out.splitlines()[-1] if rc and out else str(conf.relative_to(root))))
    return results


def _preseed(root: Path) -> list[CheckResult]:
    files = sorted((root / "pxe").glob("*.preseed.cfg"))
    if not files:
        return []
    binary = shutil.which("debconf-set-selections")
    if binary is None:
        return [CheckResult("debconf-set-selections -c", "unavailable", "debconf not installed")]
    failures = []
    for f in files:
        rc, out = _run([binary, "-c", str(f)])
        if rc != 0:
            failures.append(f"{f.relative_to(root)}: {out.splitlines()[-1] if out else rc}")
    if failures:
        return [CheckResult("debconf-set-selections -c", "failed", "\n".join(failures))]
    return [CheckResult("debconf-set-selections -c", "ok", f"{len(files)} preseed files")]


def ipxe_problems(text: str) -> list[str]:
    """An iPXE script starts with #!ipxe and every goto names a label of the script."""
    lines = text.splitlines()
    problems = [] if lines and lines[0] == "#!ipxe" else ["first line is not #!ipxe"]
    labels = {ln[1:].strip() for ln in lines if ln.startswith(":")}
    for i, line in enumerate(lines, start=1):
        for target in re.findall(r"\bgoto\s+(\S+)", line):
            if target not in labels:
                problems.append(f"line {i}: goto {target}: no such label")
    return problems


def _ipxe(root: Path) -> list[CheckResult]:
    files = sorted((root / "pxe").glob("*.ipxe"))
    if not files:
        return []
    problems = [f"{f.relative_to(root)}: {p}" for f in files for p in ipxe_problems(f.read_text())]
    boot = root / "pxe" / "boot.ipxe"
    if boot.is_file():
        for pool in re.findall(r"chain \$\{base\}/pxe/(\S+)\.ipxe", boot.read_text()):
            if not (root / "pxe" / f"{pool}.ipxe").is_file():
                problems.append(f"pxe/boot.ipxe: chains pxe/{pool}.ipxe, which was not rendered")
    return [CheckResult("iPXE invariants", "failed" if problems else "ok",
                        "\n".join(problems[:10]) or f"{len(files)} scripts, every goto has its label")]


def slurm_problems(root: Path) -> list[str]:
    """Every node defined once; partitions, gres.conf and topology name only defined nodes."""
    nodes_conf = root / "slurm" / "nodes.conf"
    if not nodes_conf.is_file():
        return []
    defined: list[str] = []
    referenced: list[tuple[str, str]] = []
    for line in nodes_conf.read_text().splitlines():
        if line.startswith("NodeName="):
            defined.append(line.split()[0].removeprefix("NodeName="))
        elif line.startswith("PartitionName="):
            part = line.split()[0]
            nodes = next(f for f in line.split() if f.startswith("Nodes=")).removeprefix("Nodes=")
            referenced += [(f"nodes.conf {part}", n) for n in nodes.split(",")]
    problems = [f"nodes.conf: NodeName={n} defined twice" for n in sorted({n for n in defined if defined.count(n) > 1})]
    for name in ("gres.conf", "topology.conf", "topology-block.conf"):
        path = root / "slurm" / name
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            members = fields.get("Nodes") or (fields.get("NodeName") if name == "gres.conf" else None)
            if members:
                referenced += [(name, n) for n in members.split(",")]
    known = set(defined)
    problems += [f"{where}: node {n} is not defined in nodes.conf" for where, n in referenced if n not in known]
    return problems


def _slurm(root: Path) -> list[CheckResult]:
    if not (root / "slurm" / "nodes.conf").is_file():
        return []
    problems = slurm_problems(root)
    return [CheckResult("Slurm invariants", "failed" if problems else "ok",
                        "\n".join(problems[:10]) or "every node defined once, every reference defined")]


@cache
def nvue_schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((templates_dir() / "switch" / "nvue-startup.schema.json").read_text())
    return data


def nvue_problems(doc: Any, name: str) -> list[str]:
    """Schema and invariant problems of one parsed NVUE startup.yaml."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(nvue_schema(), format_checker=jsonschema.FormatChecker())
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(doc)]
    if problems:
        return problems
    cfg = doc[0]["set"]
    if cfg["system"]["hostname"] != name:
        problems.append(f"system.hostname {cfg['system']['hostname']!r} is not the switch name {name!r}")
    ifaces: dict[str, Any] = cfg["interface"]
    broken = {n for n, i in ifaces.items() if "breakout" in i.get("link", {})}
    for n, iface in ifaces.items():
        m = re.fullmatch(r"swp(\d+)s\d", n)
        if m and f"swp{m.group(1)}" not in broken:
            problems.append(f"interface.{n}: subport of swp{m.group(1)}, which has no breakout")
        if n.startswith("swp") and n not in broken and iface.get("link", {}).get("mtu") != 9216:
            problems.append(f"interface.{n}.link.mtu: fabric ports need MTU 9216")
        access = iface.get("bridge", {}).get("domain", {}).get("br_default", {}).get("access")
        vlans = cfg.get("bridge", {}).get("domain", {}).get("br_default", {}).get("vlan", {})
        if access is not None and str(access) not in vlans:
            problems.append(f"interface.{n}.bridge: access VLAN {access} is not in br_default")
        vrf = iface.get("ip", {}).get("vrf")
        if vrf and vrf != "mgmt" and vrf not in cfg["vrf"]:
            problems.append(f"interface.{n}.ip.vrf: VRF {vrf!r} is not defined")
    neighbors = cfg["vrf"]["default"].get("router", {}).get("bgp", {}).get("neighbor", {}) or {}
    for n in neighbors:
        if n not in ifaces:
            problems.append(f"vrf.default.router.bgp.neighbor.{n}: no such interface")
    return problems


def _switches(root: Path) -> list[CheckResult]:
    files = sorted((root / "switches").glob("*/startup.yaml"))
    if not files:
        return []
    problems = []
    for f in files:
        try:
            doc = yaml.safe_load(f.read_text())
        except yaml.YAMLError as exc:
            problems.append(f"{f.relative_to(root)}: not YAML: {exc}")
            continue
        problems.extend(f"{f.relative_to(root)}: {p}" for p in nvue_problems(doc, f.parent.name))
    if problems:
        return [CheckResult("NVUE schema + invariants", "failed", "\n".join(problems[:10]))]
    return [CheckResult("NVUE schema + invariants", "ok", f"{len(files)} switches")]


def kea_json(path: Path) -> dict[str, Any]:
    """A Kea config as JSON: Kea allows // comment lines, JSON does not."""
    text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("//"))
    data: dict[str, Any] = json.loads(text)
    return data


def dhcp_problems(conf: dict[str, Any]) -> list[str]:
    """Reservations inside their subnet; no duplicate IP, MAC, flex-id or hostname."""
    problems = []
    seen: dict[str, dict[str, str]] = {"ip-address": {}, "hw-address": {}, "flex-id": {}, "hostname": {}}
    for subnet in conf["Dhcp4"]["subnet4"]:
        net = ipaddress.IPv4Network(subnet["subnet"])
        for r in subnet.get("reservations", []):
            ip = r["ip-address"]
            if ipaddress.IPv4Address(ip) not in net or ip in (str(net.network_address), str(net.broadcast_address)):
                problems.append(f"reservation {r.get('hostname')} {ip} is outside subnet {net}")
            for key, values in seen.items():
                if key in r:
                    if r[key] in values:
                        problems.append(f"duplicate {key} {r[key]} ({values[r[key]]} and {r.get('hostname')})")
                    values[r[key]] = str(r.get("hostname"))
    return problems


def _invariants(root: Path) -> list[CheckResult]:
    results = []
    conf = root / "dhcp" / "kea-dhcp4.conf"
    if conf.is_file():
        problems = dhcp_problems(kea_json(conf))
        results.append(CheckResult("DHCP invariants", "failed" if problems else "ok",
                                   "\n".join(problems[:10]) or "reservations inside subnets, no duplicates"))
    cables = root / "cabling" / "cables.csv"
    if cables.is_file():
        with cables.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        ends: dict[tuple[str, str], int] = {}
        problems = []
        for i, row in enumerate(rows, start=2):
            for end in ((row["a_device"], row["a_port"]), (row["b_device"], row["b_port"])):
                if end in ends:
                    problems.append(f"cables.csv line {i}: port {end[0]}:{end[1]} already cabled on line {ends[end]}")
                ends[end] = i
        results.append(CheckResult("cabling invariants", "failed" if problems else "ok",
                                   "\n".join(problems[:10]) or f"{len(rows)} cables, every port used once"))
    svgs = sorted((root / "cabling" / "racks").glob("*.svg"))
    if svgs:
        bad = []
        for svg in svgs:
            try:
                if ElementTree.parse(svg).getroot().tag != "{http://www.w3.org/2000/svg}svg":
                    bad.append(f"{svg.relative_to(root)}: root element is not <svg>")
            except ElementTree.ParseError as exc:
                bad.append(f"{svg.relative_to(root)}: {exc}")
        results.append(CheckResult("SVG well-formed", "failed" if bad else "ok",
                                   "\n".join(bad[:10]) or f"{len(svgs)} rack elevations"))
    hosts = root / "hosts" / "hosts"
    if hosts.is_file():
        seen_addr: dict[str, str] = {}
        seen_name: dict[str, str] = {}
        dupes = []
        for line in hosts.read_text().splitlines():
            if not line or line.startswith("#"):
                continue
            address, fqdn, _ = line.split("\t")
            if address in seen_addr:
                dupes.append(f"address {address}: {seen_addr[address]} and {fqdn}")
            if fqdn in seen_name:
                dupes.append(f"name {fqdn}: {seen_name[fqdn]} and {address}")
            seen_addr[address], seen_name[fqdn] = fqdn, address
        results.append(CheckResult("hosts invariants", "failed" if dupes else "ok",
                                   "\n".join(dupes[:10]) or f"{len(seen_addr)} addresses, each once"))
    leaks = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or (path.name == "user-data" and not path.stat().st_mode & 0o077):
            continue
        text = path.read_text(errors="replace")
        if "PRIVATE KEY" in text:
            leaks.append(str(path.relative_to(root)))
    results.append(CheckResult("no private key outside 0600 user-data", "failed" if leaks else "ok",
                               ", ".join(leaks[:10]) or "none found"))
    return results


def check_tree(out_dir: Path | str) -> list[CheckResult]:
    """Run every checker on a rendered tree."""
    root = Path(out_dir)
    return [*_kea(root), *_cloud_init(root), *_zones(root), *_preseed(root), *_ipxe(root), *_switches(root), *_frr(root),
            *_netplan(root), *_slurm(root), *_invariants(root)]
