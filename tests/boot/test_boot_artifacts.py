"""The rendered boot files: a node's token is only in what that node receives (its own iPXE script, the URL
its Kea reservation hands it), never in the shared or pool scripts or in another node's files."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from gpudc.boot import tokens
from gpudc.plan.types import Plan
from gpudc.render.checks import ipxe_problems, kea_json


def test_each_node_script_holds_its_own_token_only(lab_render: tuple[Plan, Path]) -> None:
    plan, tree = lab_render
    found = tokens.node_tokens(plan)
    base = f"http://{plan.boot_servers[0]}/gpudc/lab"
    for node in plan.nodes:
        script = tree / "pxe" / "nodes" / node.name / "node.ipxe"
        text = script.read_text()
        assert stat.S_IMODE(script.stat().st_mode) == 0o600
        assert ipxe_problems(text) == []
        assert f"set seed {base}/seed/{found[node.name]}/\n" in text
        assert f"chain ${{base}}/pxe/{node.pool}.ipxe " in text and (tree / "pxe" / f"{node.pool}.ipxe").is_file()
        others = [t for n, t in found.items() if n != node.name]
        assert not any(t in text for t in others)


def test_shared_pool_and_seed_files_hold_no_token(lab_render: tuple[Plan, Path]) -> None:
    plan, tree = lab_render
    found = tokens.node_tokens(plan)
    holders = {f"pxe/nodes/{n}/node.ipxe" for n in found} | {"dhcp/kea-dhcp4.conf"}
    for path in tree.rglob("*"):
        rel = path.relative_to(tree).as_posix()
        if path.is_file() and rel not in holders:
            text = path.read_text(errors="replace")
            leaked = [n for n, t in found.items() if t in text]
            assert not leaked, f"{rel} holds the seed token of {leaked}"
            assert not re.search(r"/seed/[A-Za-z0-9_-]{32}", text), rel
    shared = (tree / "pxe" / "boot.ipxe").read_text()
    assert "chain" not in shared and not any(n.name in shared for n in plan.nodes)
    for pool in {n.pool for n in plan.nodes}:
        text = (tree / "pxe" / f"{pool}.ipxe").read_text()
        assert "isset ${seed} || goto noseed" in text and "${hostname}/" not in text
        assert "${base}/pxe/nodes" not in text
    preseed = (tree / "pxe" / "h200.preseed.cfg").read_text()
    assert "/proc/cmdline" in preseed and "pxe/nodes" not in preseed
    assert "gpudc.seed=${seed}" in (tree / "pxe" / "h200.ipxe").read_text()


def test_kea_reservation_hands_the_node_its_own_script(lab_render: tuple[Plan, Path]) -> None:
    plan, tree = lab_render
    conf_path = tree / "dhcp" / "kea-dhcp4.conf"
    assert stat.S_IMODE(conf_path.stat().st_mode) == 0o600
    conf = kea_json(conf_path)["Dhcp4"]
    classes = {c["name"]: c for c in conf["client-classes"]}
    reservations = {r["hostname"]: r for s in conf["subnet4"] for r in s["reservations"]}
    found = tokens.node_tokens(plan)
    base = f"http://{plan.boot_servers[0]}/gpudc/lab"
    for node in plan.nodes:
        res = reservations[node.name]
        assert ("hw-address" in res) or res["flex-id"] == f"'{node.name}'"  # the identifier Kea already used
        assert res["client-classes"] == ["gpudc-node", f"gpudc-node-{node.name}"]
        own = classes[f"gpudc-ipxe-{node.name}"]
        assert own["test"] == f"member('ipxe') and member('gpudc-node-{node.name}')"
        assert own["boot-file-name"] == f"{base}/seed/{found[node.name]}/node.ipxe"
        assert "client-classes" not in reservations[f"{node.name}-bmc"]
    assert classes["ipxe-shared"]["boot-file-name"] == f"{base}/pxe/boot.ipxe"
    assert classes["ipxe-shared"]["test"] == "member('ipxe') and not member('gpudc-node')"
    assert "boot-file-name" not in classes["ipxe"]
    # Kea needs a class defined before a test names it
    names = [c["name"] for c in conf["client-classes"]]
    for node in plan.nodes:
        assert names.index(f"gpudc-node-{node.name}") < names.index(f"gpudc-ipxe-{node.name}")
