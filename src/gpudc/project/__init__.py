"""Where things are: the user's site project, and gpudc's own state, cache and secrets.

A site project is the user's own folder, found in this order:
  1. `--project DIR` (every command takes it),
  2. `$GPUDC_PROJECT`,
  3. the nearest folder upward from the current one that holds a `Pulumi.yaml`.
Its stacks live in the `stackConfigDir` that Pulumi.yaml names (Pulumi's default: next to it),
its catalog overlay in `catalog/`. A stack given as a file path belongs to the project above
that file, if any.

gpudc's per-user folders (XDG base directories, each with an override):

| what | default | override |
| --- | --- | --- |
| state: history, provision runs, reprovision journal, Pulumi backend | `$XDG_STATE_HOME/gpudc` (`~/.local/state/gpudc`) | `GPUDC_STATE_DIR` |
| cache: the lab's root filesystem | `$XDG_CACHE_HOME/gpudc` (`~/.cache/gpudc`) | `GPUDC_CACHE_DIR` |
| a site's secrets (mode 0700/0600) | `<state>/<site>/secrets` | `GPUDC_SECRET_DIR` (then `<dir>/<site>`) |
| validation history | `<state>/history.db` | `GPUDC_HISTORY` |
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from gpudc.errors import InputError

PROJECT_FILE = "Pulumi.yaml"
PROJECT_ENV = "GPUDC_PROJECT"


# -- per-user folders -------------------------------------------------------------------------


def _xdg(env: str, fallback: str) -> Path:
    return Path(os.environ.get(env) or str(Path.home() / fallback))


def state_dir() -> Path:
    override = os.environ.get("GPUDC_STATE_DIR")
    return Path(override) if override else _xdg("XDG_STATE_HOME", ".local/state") / "gpudc"


def cache_dir() -> Path:
    override = os.environ.get("GPUDC_CACHE_DIR")
    return Path(override) if override else _xdg("XDG_CACHE_HOME", ".cache") / "gpudc"


def site_state_dir(site: str) -> Path:
    """Run artifacts of one site (provision runs, inventory, reprovision journal, drains)."""
    from gpudc.model.site import check_label

    check_label(site)
    return state_dir() / site


def site_secret_dir(site: str) -> Path:
    """A site's secret folder, made 0700 on first use."""
    from gpudc.model.site import check_label

    check_label(site)
    override = os.environ.get("GPUDC_SECRET_DIR")
    path = Path(override) / site if override else state_dir() / site / "secrets"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def history_path() -> Path:
    env = os.environ.get("GPUDC_HISTORY")
    return Path(env) if env else state_dir() / "history.db"


# -- the site project -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Project:
    """A site project: a folder with a Pulumi.yaml, its stacks and its catalog overlay."""

    root: Path
    name: str
    stacks_dir: Path

    @property
    def catalog_overlay(self) -> Path:
        return self.root / "catalog"

    @property
    def pulumi_file(self) -> Path:
        return self.root / PROJECT_FILE

    def stack_names(self) -> list[str]:
        return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in self.stacks_dir.glob("Pulumi.*.yaml"))

    def stack_file(self, name: str) -> Path:
        return self.stacks_dir / f"Pulumi.{name}.yaml"


def read_project(root: Path) -> Project:
    """The project whose Pulumi.yaml is in `root`; InputError naming the file when it is bad."""
    path = root / PROJECT_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=str(path)) from None
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {str(exc).splitlines()[0]}", source=str(path)) from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise InputError("a Pulumi project file needs a `name:`", source=str(path))
    config_dir = data.get("stackConfigDir", ".")
    if not isinstance(config_dir, str) or Path(config_dir).is_absolute() or ".." in Path(config_dir).parts:
        raise InputError("stackConfigDir: must be a folder inside the project", source=str(path))
    return Project(root=root.resolve(), name=data["name"], stacks_dir=(root / config_dir).resolve())


def find_project_root(start: Path) -> Path | None:
    """The nearest folder from `start` upward that holds a Pulumi.yaml."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    return None


_chosen: Path | None = None


def use_project(root: Path | None) -> None:
    """Fix the project for this process (`--project DIR`); None goes back to env and discovery."""
    global _chosen
    _chosen = root


@contextmanager
def project_at(root: Path) -> Iterator[None]:
    """Work in one project for the duration (library use and tests)."""
    global _chosen
    before = _chosen
    _chosen = root
    try:
        yield
    finally:
        _chosen = before


def current_project() -> Project | None:
    """The project of this run: --project, $GPUDC_PROJECT, or found upward from the current folder."""
    explicit = _chosen or (Path(os.environ[PROJECT_ENV]) if os.environ.get(PROJECT_ENV) else None)
    if explicit is not None:
        how = "--project" if _chosen else PROJECT_ENV
        if not (explicit / PROJECT_FILE).is_file():
            raise InputError(f"{how} {explicit}: no {PROJECT_FILE} there (`gpudc init {explicit}` makes a project)")
        return read_project(explicit)
    root = find_project_root(Path.cwd())
    return read_project(root) if root else None


def project_of_stack_file(path: Path) -> Project | None:
    """The project a stack file belongs to: the nearest Pulumi.yaml above the file."""
    root = find_project_root(path.resolve().parent)
    return read_project(root) if root else None


def require_project() -> Project:
    project = current_project()
    if project is None:
        raise InputError(
            f"no gpudc project here: no {PROJECT_FILE} in {Path.cwd()} or above "
            "(run inside a site project, pass --project DIR, or make one: gpudc init DIR --example NAME)"
        )
    return project
