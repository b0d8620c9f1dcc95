"""Golden files: the lab's whole tree and a subset of a real-size site (soroban-ayagawa).

Regenerate after an intended change with `GPUDC_UPDATE_GOLDEN=1 pytest tests/render` and
review the diff. Key material and seed tokens differ per secret dir, so they are masked before comparing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from gpudc.plan.types import Plan

GOLDEN = Path(__file__).parent / "golden"

UPDATE = os.environ.get("GPUDC_UPDATE_GOLDEN") == "1"
#: Files other areas own (the inventory comes from gpudc.provision) or that list every path.
NOT_GOLDEN = ("inventory/", ".gpudc-render")
BIG_SUBSET = (
    "switches/inband-leaf01/startup.yaml",
    "slurm/topology.conf",
    "slurm/gres.conf",
    "cabling/racks/room-a-a01.svg",
    "dns/db.8.40.10.in-addr.arpa",
    "pxe/h200a.ipxe",
    "pxe/nodes/room-b-a01-n01/user-data",
    "slurm/nodes.conf",
)

_PRIVATE = re.compile(r"-----BEGIN OPENSSH PRIVATE KEY-----.*?-----END OPENSSH PRIVATE KEY-----(\\n)?", re.S)
_PUBLIC = re.compile(r"ssh-ed25519 [A-Za-z0-9+/=]+")
_SEED_TOKEN = re.compile(r"/seed/[A-Za-z0-9_-]{32}/")  # per secret dir, like the keys (gpudc.boot.tokens)


def mask(text: str) -> str:
    text = _SEED_TOKEN.sub("/seed/<token>/", text)
    return _PUBLIC.sub("ssh-ed25519 <key>", _PRIVATE.sub("<private key>", text))


def _compare(tree: Path, rel: str, golden_root: Path) -> None:
    got = mask((tree / rel).read_text())
    golden = golden_root / rel
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(got)
    assert golden.is_file(), f"no golden file {golden}; run with GPUDC_UPDATE_GOLDEN=1"
    assert got == golden.read_text(), f"{rel} differs from its golden file {golden}"


def _lab_files(tree: Path) -> list[str]:
    return sorted(
        str(p.relative_to(tree)) for p in tree.rglob("*")
        if p.is_file() and not str(p.relative_to(tree)).startswith(NOT_GOLDEN)
    )


def test_lab_tree_matches_golden(lab_tree: tuple[Plan, Path]) -> None:
    _, tree = lab_tree
    files = _lab_files(tree)
    root = GOLDEN / "lab"
    if not UPDATE:
        golden_files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        assert files == golden_files, "the lab renders a different set of files than its golden tree"
    for rel in files:
        _compare(tree, rel, root)


@pytest.mark.parametrize("rel", BIG_SUBSET)
def test_real_size_site_matches_golden(big_tree: tuple[Plan, Path], rel: str) -> None:
    _, tree = big_tree
    _compare(tree, rel, GOLDEN / "soroban-ayagawa")


def test_masking_hides_keys_but_not_structure(lab_tree: tuple[Plan, Path]) -> None:
    _, tree = lab_tree
    raw = (tree / "pxe/nodes/h200-01/user-data").read_text()
    masked = mask(raw)
    assert "PRIVATE KEY" in raw and "PRIVATE KEY" not in masked
    assert "ed25519_private: \"<private key>\"" in masked
