"""gpudc as its users get it: the wheel installed in a fresh venv, used outside this checkout.

Builds the wheel, installs it (dependencies from PyPI through pip's cache) into a new venv and
works in an empty folder: `gpudc init`, `stacks`, `plan` (also from a subfolder), `render
--check`, the project's Pulumi program under the SDK's mocks; a second `init` is refused; the lab
says at once which extra it needs. Slow (a venv install), so one module-scoped venv serves all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHECKOUT = Path(__file__).resolve().parents[2]


@dataclass
class Installed:
    venv: Path
    home: Path  # HOME, XDG dirs and secrets of the runs: nothing of the developer's

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(self.home),
            "XDG_STATE_HOME": str(self.home / "state"),
            "XDG_CACHE_HOME": str(self.home / "cache"),
            "LANG": "C.UTF-8",
            "COLUMNS": "200",
        }

    def run(self, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / "gpudc"), *args], cwd=cwd, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def python(self, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / "python"), "-c", code], cwd=cwd, env=self.env(),
                              capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    pip_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(CHECKOUT)],
                   check=True, timeout=600, env=pip_env)
    wheels = list(dist.glob("gpudc-*.whl"))
    assert len(wheels) == 1, wheels
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheels[0])], check=True, timeout=1200,
                   env=pip_env)
    home = root / "home"
    home.mkdir()
    yield Installed(venv, home)


def test_the_wheel_carries_what_gpudc_reads_at_run_time(installed: Installed, tmp_path: Path) -> None:
    out = installed.python(
        "import gpudc, json; from gpudc.resources import shipped;"
        "print(json.dumps({'module': gpudc.__file__, 'dirs': {n: str(shipped(n)) for n in "
        "('catalog', 'templates', 'playbooks', 'schema', 'examples')}}))",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert Path(doc["module"]).is_relative_to(installed.venv), "gpudc must come from the venv, not the checkout"
    for name, folder in doc["dirs"].items():
        path = Path(folder)
        assert path.is_relative_to(installed.venv) and not path.is_symlink(), name
        assert any(path.iterdir()), name
    playbooks = Path(doc["dirs"]["playbooks"])
    assert (playbooks / "site.yml").is_file() and (playbooks / "roles" / "nvidia_driver" / "tasks").is_dir()


def test_a_new_site_project_outside_the_checkout(installed: Installed, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    init = installed.run("init", "site", "--example", "soroban-ayagawa", cwd=work)
    assert init.returncode == 0, init.stderr
    site = work / "site"
    for name in ("Pulumi.yaml", "__main__.py", "stacks/Pulumi.soroban-ayagawa.yaml", "catalog/README.md",
                 ".gitignore", "README.md"):
        assert (site / name).is_file(), name

    stacks = installed.run("stacks", cwd=site)
    assert stacks.returncode == 0, stacks.stderr
    assert "soroban-ayagawa" in stacks.stdout and "osaka-sakai" not in stacks.stdout

    plan = installed.run("plan", "--stack", "soroban-ayagawa", "--json", "plan.json", cwd=site)
    assert plan.returncode == 0, plan.stderr
    assert json.loads((site / "plan.json").read_text())["totals"]["gpus"] == 384

    sub = site / "deep" / "er"
    sub.mkdir(parents=True)
    from_sub = installed.run("plan", "--stack", "soroban-ayagawa", cwd=sub)
    assert from_sub.returncode == 0, from_sub.stderr

    render = installed.run("render", "--stack", "soroban-ayagawa", "--out", "build/site", "--check", cwd=site)
    assert render.returncode == 0, render.stdout + render.stderr
    assert (site / "build" / "site").is_dir()

    # the project's own Pulumi program (Pulumi.yaml main: __main__.py), under the SDK's mocks
    program = installed.python(
        "import json; from pathlib import Path; from gpudc.infra.mocks import run_program, stack_file_config;"
        "c = stack_file_config(Path('stacks/Pulumi.soroban-ayagawa.yaml'), {'gpudc:bmcPassword': 'pw-of-test'});"
        "r = run_program(c, stack='soroban-ayagawa', secret_keys=['gpudc:bmcPassword'], main=Path('__main__.py'));"
        "print(json.dumps(r.counts()))",
        cwd=site,
    )
    assert program.returncode == 0, program.stderr
    counts = json.loads(program.stdout.strip().splitlines()[-1])
    assert counts["pulumi-python:dynamic/gpudc:BmcSettings"] == 48, counts
    assert counts["gpudc:infra:Node"] == 48, counts

    again = installed.run("init", "site", "--example", "lab", cwd=work)
    assert again.returncode == 2 and "nothing written" in again.stderr
    assert not (site / "stacks" / "Pulumi.lab.yaml").exists()
    outside = installed.run("plan", "--stack", "soroban-ayagawa", cwd=work)
    assert outside.returncode == 2 and "no gpudc project here" in outside.stderr


def test_the_lab_names_its_extra_when_missing(installed: Installed, tmp_path: Path) -> None:
    start = time.monotonic()
    out = installed.run("lab", "up", cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "pip install 'gpudc[lab]'" in out.stderr and "sushy-tools" in out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - start < 30
