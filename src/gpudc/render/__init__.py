"""Rendered site artifacts: every file an engineer needs to bring a site up, from the plan.

    render_site(plan, out_dir, site=None) -> list[Path]     write the tree (README index, one folder per kind)
    check_tree(out_dir) -> list[CheckResult]               run the real checkers on a rendered tree
    diff_tree(plan, out_dir, site=None) -> str              what a re-render would change (unified diff)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gpudc.render.checks import CheckResult, check_tree
from gpudc.render.context import SiteExtras, extras_from_site
from gpudc.render.site import diff_tree, render_site

if TYPE_CHECKING:
    from gpudc.model.site import Site  # noqa: F401

__all__ = ["CheckResult", "Path", "SiteExtras", "check_tree", "diff_tree", "extras_from_site", "render_site"]
