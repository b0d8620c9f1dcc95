"""`gpudc render` and `gpudc cabling check` through the command: exit codes, determinism, --diff."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from gpudc.cli import main

DATA = Path(__file__).parent / "data"
IBMINI = str(DATA / "Pulumi.ibmini.yaml")
LAB = Path(__file__).resolve().parents[2] / "stacks" / "Pulumi.lab.yaml"


def _digest(tree: Path) -> dict[str, tuple[str, int, int]]:
    return {
        str(p.relative_to(tree)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode, p.stat().st_mtime_ns)
        for p in sorted(tree.rglob("*")) if p.is_file()
    }


def test_render_check_exit_0_and_rerender_changes_no_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["render", "--stack", IBMINI, "--out", str(out), "--check"]) == 0
    err = capsys.readouterr().err
    for checker in ("kea-dhcp4 -t", "cloud-init schema", "named-checkzone", "NVUE schema"):
        assert f"ok {checker}" in err
    first = _digest(out)
    assert main(["render", "--stack", IBMINI, "--out", str(out)]) == 0
    assert _digest(out) == first  # same bytes, same modes, not even rewritten
    other = tmp_path / "other"
    assert main(["render", "--stack", IBMINI, "--out", str(other)]) == 0
    assert {k: v[:2] for k, v in _digest(other).items()} == {k: v[:2] for k, v in first.items()}
    for kind in ("dhcp", "dns", "pxe", "switches", "fabric", "cabling", "imex", "slurm", "hosts", "inventory"):
        assert (out / kind).is_dir(), kind
    readme = (out / "README.md").read_text()
    assert "switches/frontend-leaf01/startup.yaml" in readme and "Placeholders" in readme


def _site_variant(tmp_path: Path, count: int) -> Path:
    doc = yaml.safe_load(LAB.read_text())
    doc["config"]["gpudc:pools"][0]["count"] = count
    path = tmp_path / "Pulumi.lab.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_diff_shows_a_site_change_and_hides_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["render", "--stack", "lab", "--out", str(out)]) == 0
    before = _digest(out)
    capsys.readouterr()
    assert main(["render", "--stack", "lab", "--out", str(out), "--diff"]) == 0
    assert capsys.readouterr().out == ""  # unchanged site: empty diff
    grown = _site_variant(tmp_path, 3)
    assert main(["render", "--stack", str(grown), "--out", str(out), "--diff"]) == 0
    diff = capsys.readouterr().out
    assert re.search(r"^\+10\.213\.0\.\d+\th200-03\.lab\.gpudc\.internal\th200-03$", diff, re.M)
    assert "+++ b/pxe/nodes/h200-03/meta-data" in diff
    assert "pxe/nodes/h200-03/user-data\n# secret file added (content not shown)" in diff
    assert "PRIVATE KEY" not in diff
    # the node's iPXE script and the Kea config carry seed tokens: named, never shown
    assert "pxe/nodes/h200-03/node.ipxe\n# secret file added (content not shown)" in diff
    assert "dhcp/kea-dhcp4.conf\n# secret file changed (content not shown)" in diff
    assert not re.search(r"/seed/[A-Za-z0-9_-]{32}", diff)
    assert _digest(out) == before  # --diff writes nothing


def test_rerender_removes_files_of_nodes_that_left(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["render", "--stack", str(_site_variant(tmp_path, 3)), "--out", str(out)]) == 0
    assert (out / "pxe/nodes/h200-03/user-data").is_file()
    (out / "operator-notes.txt").write_text("not ours")
    assert main(["render", "--stack", "lab", "--out", str(out)]) == 0
    assert not (out / "pxe/nodes/h200-03").exists()
    assert (out / "pxe/nodes/h200-02/user-data").is_file()
    assert (out / "operator-notes.txt").read_text() == "not ours"  # only files it wrote itself


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("gpudc:naming", "node"), "{pool}-$(reboot)", "naming.node"),
        (("gpudc:naming", "node"), "{pool}-{{index}}", "naming.node"),
        (("gpudc:site", "name"), "lab;rm -rf /", "site.name"),
        (("gpudc:site", "domain"), "lab.'$x'.internal", "site.domain"),
        (("gpudc:pools", 0, "name"), "h200`id`", "pools[0].name"),
        (("gpudc:macs",), {"h200-01\nevil": {"boot": "02:00:00:00:00:01"}}, "macs"),
    ],
)
def test_metacharacters_are_rejected_with_a_yaml_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], path: tuple[str | int, ...], value: object, where: str
) -> None:
    doc = yaml.safe_load(LAB.read_text())
    target = doc["config"]
    for key in path[:-1]:
        target = target.setdefault(key, {}) if isinstance(key, str) else target[key]
    target[path[-1]] = value
    stack = tmp_path / "Pulumi.bad.yaml"
    stack.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    assert main(["render", "--stack", str(stack), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert where in err and "Traceback" not in err
    assert not out.exists()  # nothing rendered from a bad site


def test_cabling_check_clean_samples_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cabling", "check", "--stack", IBMINI, "--ibnetdiscover", str(DATA / "ibmini.ibnetdiscover")]) == 0
    assert "136 planned, 136 seen" in capsys.readouterr().out
    assert main(["cabling", "check", "--stack", IBMINI, "--lldp", str(DATA / "lldp/frontend-leaf01.json")]) == 0


def _edit_sample(text: str) -> str:
    lines = text.splitlines()

    def find(fragment: str) -> int:
        return next(i for i, ln in enumerate(lines) if fragment in ln)

    # swap: the two HCAs on leaf01 ports 1 and 2 trade places (both blocks of each link change)
    a, b = find('# "h1-a01-n01 mlx5_0"'), find('# "h1-a01-n02 mlx5_0"')
    pa, pb = lines[a].split("\t", 1), lines[b].split("\t", 1)
    lines[a], lines[b] = f"{pa[0]}\t{pb[1]}", f"{pb[0]}\t{pa[1]}"
    ca = find('Ca\t1 "H-946dae0300007c07"') + 1
    cb = find('Ca\t1 "H-946dae0300007c0b"') + 1
    lines[ca] = lines[ca].replace('"[1]', '"[2]', 1)
    lines[cb] = lines[cb].replace('"[2]', '"[1]', 1)
    # missing: leaf02 port 33 -> spine01 port 17 is unplugged (gone from both blocks)
    del lines[find('[33]\t"S-b83fd20300004a15"[17]')]
    del lines[find('[17]\t"S-b83fd20300004a12"[33]')]
    # extra: a cable nobody planned, leaf04 port 20 to spine02 port 64
    i = find('# "ib-su01-leaf04" enhanced port 0')
    lines.insert(i + 1, '[20]\t"S-b83fd20300004a16"[64]\t\t# "ib-spine02" lid 6 4xNDR')
    return "\n".join(lines) + "\n"


def test_cabling_check_finds_swapped_missing_and_extra(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = tmp_path / "fabric.ibnetdiscover"
    sample.write_text(_edit_sample((DATA / "ibmini.ibnetdiscover").read_text()))
    report = tmp_path / "report.json"
    code = main(["cabling", "check", "--stack", IBMINI, "--ibnetdiscover", str(sample), "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r'SWAPPED .*"h1-a01-n01 mlx5_0"\[1\] -- "ib-su01-leaf01"\[1\].*"h1-a01-n02 mlx5_0"\[1\] -- "ib-su01-leaf01"\[2\]', out)
    assert 'MISSING  "ib-spine01"[17] -- "ib-su01-leaf02"[33]' in out
    assert 'EXTRA    "ib-spine02"[64] -- "ib-su01-leaf04"[20]' in out
    assert "1 missing, 1 extra, 1 swapped pairs" in out
    data = yaml.safe_load(report.read_text())
    assert len(data["swapped"]) == 1 and len(data["missing"]) == 1 and len(data["extra"]) == 1


def test_cabling_check_lldp_finds_a_swap_and_a_missing_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (DATA / "lldp/frontend-leaf01.json").read_text()
    swapped = text.replace('"h1-a01-n01"', '"TMP"').replace('"h1-a01-n02"', '"h1-a01-n01"').replace('"TMP"', '"h1-a01-n02"')
    path = tmp_path / "frontend-leaf01.json"
    path.write_text(swapped)
    assert main(["cabling", "check", "--stack", IBMINI, "--lldp", str(path)]) == 1
    assert "SWAPPED" in capsys.readouterr().out
    doc = json.loads(text)
    doc["lldp"]["interface"] = doc["lldp"]["interface"][0]  # lldpctl's form for a single neighbor
    path.write_text(json.dumps(doc))
    assert main(["cabling", "check", "--stack", IBMINI, "--lldp", str(path)]) == 1
    assert 'MISSING  "frontend-leaf01"[swp1s1] -- "h1-a01-n02"[-]' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ibnetdiscover", "NOFILE"], "cannot read"),
        (["--ibnetdiscover", "GARBAGE"], "not ibnetdiscover output"),
        (["--lldp", "GARBAGE_JSON"], "not `lldpctl -f json` output"),
        (["--lldp", "WRONG_NAME"], "is no switch of site ibmini"),
    ],
)
def test_cabling_check_bad_input_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("hello\nthis is not a fabric\n")
    bad_json = tmp_path / "frontend-leaf01.json"
    bad_json.write_text("{]")
    wrong = tmp_path / "nonexistent-switch.json"
    shutil.copy(DATA / "lldp/frontend-leaf01.json", wrong)
    paths = {"NOFILE": str(tmp_path / "missing"), "GARBAGE": str(garbage), "GARBAGE_JSON": str(bad_json),
             "WRONG_NAME": str(wrong)}
    argv = ["cabling", "check", "--stack", IBMINI, *[paths.get(a, a) for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cabling_check_accepts_fqdn_hca_descriptions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (DATA / "ibmini.ibnetdiscover").read_text()
    sample = tmp_path / "fqdn.ibnetdiscover"
    sample.write_text(re.sub(r'"(h1-a01-n0\d) (mlx5_\d)"', r'"\1.ibmini.example.internal \2"', text))
    assert "ibmini.example.internal mlx5_0" in sample.read_text()
    assert main(["cabling", "check", "--stack", IBMINI, "--ibnetdiscover", str(sample)]) == 0
    assert "cabling matches the plan" in capsys.readouterr().out


def test_render_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["render", "--stack", "lab", "--out", str(afile)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert main(["render", "--stack", "no-such-site", "--out", str(tmp_path / "o")]) == 2
    assert "unknown stack 'no-such-site'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["cabling", "check", "--stack", "lab"])  # neither --ibnetdiscover nor --lldp
    assert exc.value.code == 2
    assert main(["cabling", "check", "--stack", "lab", "--ibnetdiscover", str(DATA / "ibmini.ibnetdiscover")]) == 2
    assert "has no InfiniBand compute fabric" in capsys.readouterr().err
