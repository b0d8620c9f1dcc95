"""What the gpudc package ships and reads at run time: catalog, templates, playbooks, schema, examples.

The repository keeps them at its top level (catalog/, templates/, playbooks/, schema/, stacks/);
`src/gpudc/_data/` holds links to them, which the build copies into the wheel as real folders.
Everything is found through `importlib.resources`, so a source checkout, an editable install and
an installed wheel read the same files the same way.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from gpudc.errors import GpudcError

Shipped = Literal["catalog", "templates", "playbooks", "schema", "examples"]


def shipped(name: Shipped) -> Path:
    """The folder of one kind of shipped data, as a real path (Ansible and Jinja2 need one)."""
    folder = resources.files("gpudc") / "_data" / name
    path = Path(str(folder))
    if not path.is_dir():
        raise GpudcError(f"this gpudc install lacks its {name}/ folder ({path}); reinstall gpudc")
    return path
