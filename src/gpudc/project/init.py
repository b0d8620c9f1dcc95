"""`gpudc init DIR [--example NAME]`: a new site project in the user's own folder.

It writes Pulumi.yaml (python runtime; main: a two-line program that runs the installed gpudc
program), the example's stack under stacks/, an empty catalog/ overlay with a README, a
.gitignore and a README with the next commands. It never writes into an existing project.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gpudc.errors import InputError
from gpudc.project import PROJECT_FILE, find_project_root
from gpudc.resources import shipped

DEFAULT_EXAMPLE = "starter"

PROGRAM = '''"""The Pulumi program of this site: gpudc's, as installed (see Pulumi.yaml)."""

from gpudc.infra.program import main

main()
'''

CATALOG_README = """# Catalog overlay

Entries here add to gpudc's shipped catalog or replace the shipped entry of the same name
(`gpudc catalog show` lists the merged catalog and where each entry comes from). Same layout
as the shipped catalog:

- `hardware/<sku>.yaml`: a SKU (`name`, `kind: node|rack`, `description`, `source`, `facts`
  with `{value, source}` each); `hardware/switches.yaml`: `switches: {<model>: {...}}`
- `software/<profile>.yaml`: a software profile (pins a whole node image)
- `validation/thresholds.yaml`: `thresholds:` / `rules:` overrides, each with its `source:`
- `network/conventions.yaml`: network conventions (ASN plan, VLANs, MTU), `{value, source}` each

Every entry says where its facts come from (`source:`); an entry without one is refused.
To start from a shipped entry, copy it from `gpudc catalog show --json` (its `file`).
"""

GITIGNORE = """# gpudc: never commit state, secrets or build output
/build/
/out/
*.pem
*_ed25519
*.key
bmc-password
.venv/
__pycache__/
"""


def _readme(name: str, stack: str) -> str:
    return f"""# {name}

A GPU datacenter site described with gpudc. The site is `stacks/Pulumi.{stack}.yaml`.

```
gpudc stacks                                   # the sites of this project
gpudc plan --stack {stack}                     # racks, power, fabrics, addresses
gpudc render --stack {stack} --out build/{stack}    # DHCP, PXE, switches, IMEX, Slurm, inventory
gpudc provision --stack {stack}                # driver, CUDA, NCCL, FM, IMEX, DCGM over Ansible
gpudc validate --stack {stack} --html build/report.html
gpudc catalog show                             # SKUs and profiles (shipped + catalog/)
```

Secrets (controller SSH key, host keys, BMC password) live outside this folder, in gpudc's state
dir (`$XDG_STATE_HOME/gpudc/<site>/secrets`, or `GPUDC_SECRET_DIR`). With the Pulumi CLI:
`pulumi stack select {stack} && pulumi preview`.
"""


def examples() -> dict[str, Path]:
    """The shipped example stacks by name."""
    return {
        p.name.removeprefix("Pulumi.").removesuffix(".yaml"): p
        for p in sorted(shipped("examples").glob("Pulumi.*.yaml"))
    }


def _pulumi_yaml(name: str) -> str:
    lines = [
        f"name: {name}",
        "description: a GPU datacenter site described with gpudc",
        "runtime:",
        "  name: python",
    ]
    if sys.prefix != sys.base_prefix:
        # the environment gpudc is installed in (venv or pipx), so `pulumi` runs this gpudc
        lines += ["  options:", f"    virtualenv: {sys.prefix}"]
    lines += ["main: __main__.py", "stackConfigDir: stacks", ""]
    return "\n".join(lines)


def init_project(target: Path, example: str = DEFAULT_EXAMPLE) -> list[Path]:
    """Write a new project into `target` (made if missing); the files written."""
    known = examples()
    if example not in known:
        raise InputError(f"init: --example {example!r} is not a shipped example (examples: {', '.join(known)})")
    existing = find_project_root(target) if target.exists() else None
    if existing is not None:
        raise InputError(f"init: {target} is inside the gpudc project {existing} ({PROJECT_FILE}); nothing written")
    if target.exists() and not target.is_dir():
        raise InputError(f"init: {target} exists and is not a folder; nothing written")
    clashes = [n for n in ("stacks", "catalog", "__main__.py", "README.md", ".gitignore") if (target / n).exists()]
    if clashes:
        raise InputError(f"init: {target} already has {', '.join(clashes)}; nothing written")
    name = target.resolve().name.lower()
    files = {
        PROJECT_FILE: _pulumi_yaml(name if name else "site"),
        "__main__.py": PROGRAM,
        f"stacks/Pulumi.{example}.yaml": known[example].read_text(),
        "catalog/README.md": CATALOG_README,
        ".gitignore": GITIGNORE,
        "README.md": _readme(name, example),
    }
    written = []
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
