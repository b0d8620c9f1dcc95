"""render_site: the whole tree, its README index, and --diff."""

from __future__ import annotations

import difflib
import importlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpudc.model.site import Site
from gpudc.plan.types import Plan
from gpudc.render import artifacts
from gpudc.render.context import extras_from_site
from gpudc.render.writer import MANIFEST, Writer, Written

INVENTORY_MODULE = "gpudc.provision.inventory"

Renderer = Callable[[artifacts.Ctx, Writer], None]

RENDERERS: tuple[tuple[str, Renderer], ...] = (
    ("hosts", artifacts.render_hosts),
    ("dns", artifacts.render_dns),
    ("dhcp", artifacts.render_dhcp),
    ("pxe", artifacts.render_pxe),
    ("switches", artifacts.render_switches),
    ("fabric", artifacts.render_fabric),
    ("cabling", artifacts.render_cabling),
    ("imex", artifacts.render_imex),
    ("slurm", artifacts.render_slurm),
)


def _render_inventory(plan: Plan, w: Writer) -> None:
    """The Ansible inventory, through provisioning's own code path (one inventory for both)."""
    try:
        module: Any = importlib.import_module(INVENTORY_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != INVENTORY_MODULE:
            raise
        w.notes.append(f"inventory: not rendered: {INVENTORY_MODULE} is not part of this build")
        return
    # build_inventory + dump_inventory is write_inventory's own path; the Writer writes the text so an
    # unchanged inventory is left untouched like every other file.
    text = module.dump_inventory(module.build_inventory(plan))
    w.write("inventory/hosts.yml", text, "inventory",
            f"Ansible inventory ({INVENTORY_MODULE}.build_inventory, the one provisioning uses)")


def render_site(plan: Plan, out_dir: Path | str, site: Site | None = None) -> list[Path]:
    """Write every artifact of the plan under out_dir; returns the written paths, sorted.

    `site` gives the render-only values the plan does not carry (DNS domain, VLANs, MTU,
    Slurm names, BMC MACs); without it the documented defaults apply.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    ctx = artifacts.Ctx.build(plan, extras_from_site(plan, site))
    w = Writer(root)
    _render_inventory(plan, w)
    for _, renderer in RENDERERS:
        renderer(ctx, w)
    kinds: dict[str, list[Written]] = {}
    for entry in sorted(w.written, key=lambda e: e.path):
        kinds.setdefault(entry.kind, []).append(entry)
    totals = {"nodes": len(plan.nodes), "gpus": plan.gpu_count, "switches": len(plan.switches),
              "cables": len(plan.cables)}
    readme = ctx.render(
        "README.md.j2", totals=totals, kinds=kinds, files=w.written, placeholders=w.placeholders, notes=w.notes,
        secret_count=sum(1 for e in w.written if e.secret),
    )
    w.write("README.md", readme, "index", "this index")
    return w.finish()


def _tree_files(root: Path) -> dict[str, Path]:
    manifest = root / MANIFEST
    if manifest.is_file():
        rels = [line.strip() for line in manifest.read_text().splitlines() if line.strip()]
        return {rel: root / rel for rel in rels if (root / rel).is_file()}
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _is_secret(path: Path) -> bool:
    """The writer makes every file that holds a secret (a host key, a node's seed token) owner-only."""
    return (path.stat().st_mode & 0o077) == 0


def diff_tree(plan: Plan, out_dir: Path | str, site: Site | None = None) -> str:
    """A unified diff from the tree in out_dir to what rendering the plan would write.

    out_dir is not touched. Files holding secrets show as changed, never their content.
    """
    old_root = Path(out_dir)
    old = _tree_files(old_root) if old_root.is_dir() else {}
    with tempfile.TemporaryDirectory(prefix="gpudc-render-") as tmp:
        render_site(plan, tmp, site)
        new = _tree_files(Path(tmp))
        chunks: list[str] = []
        for rel in sorted(set(old) | set(new)):
            a = old.get(rel)
            b = new.get(rel)
            a_text = a.read_text() if a else ""
            b_text = b.read_text() if b else ""
            if a_text == b_text:
                continue
            if (a and _is_secret(a)) or (b and _is_secret(b)):
                state = "added" if a is None else "removed" if b is None else "changed"
                chunks.append(f"--- a/{rel}\n+++ b/{rel}\n# secret file {state} (content not shown)\n")
                continue
            chunks.append("".join(difflib.unified_diff(
                a_text.splitlines(keepends=True), b_text.splitlines(keepends=True),
                fromfile=f"a/{rel}" if a else "/dev/null", tofile=f"b/{rel}" if b else "/dev/null",
            )))
        return "".join(chunks)
