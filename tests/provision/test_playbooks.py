"""The playbooks pass ansible-lint (production profile, offline) and ansible-playbook --syntax-check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gpudc.plan import load_plan
from gpudc.provision.inventory import write_inventory
from gpudc.provision.runner import PLAYBOOKS
from gpudc.resources import shipped

BIN = Path(sys.executable).parent
PLAYBOOK_DIR = shipped("playbooks")
ROLES = ("gpu_host_prep", "nvidia_repo", "nvidia_driver", "fabric_manager", "imex", "cuda_toolkit",
         "nccl", "dcgm", "rdma", "container_toolkit")


def env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "ANSIBLE_HOME": str(tmp / "ah"),
            "ANSIBLE_ROLES_PATH": str(PLAYBOOK_DIR / "roles"), "NO_COLOR": "1"}


def test_syntax_check(tmp_path: Path) -> None:
    inventory = write_inventory(load_plan("lab"), tmp_path / "hosts.yml")
    for book in PLAYBOOKS:
        out = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), "--syntax-check",
                              str(PLAYBOOK_DIR / book)], capture_output=True, text=True, env=env(tmp_path), timeout=120)
        assert out.returncode == 0, f"{book}: {out.stdout}{out.stderr}"


def test_ansible_lint_production(tmp_path: Path) -> None:
    config = PLAYBOOK_DIR / ".ansible-lint"
    assert "offline: true" in config.read_text() and "profile: production" in config.read_text()
    out = subprocess.run([str(BIN / "ansible-lint"), "-c", str(config), "--nocolor"], cwd=PLAYBOOK_DIR,
                         capture_output=True, text=True, env=env(tmp_path), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Profile 'production' was required, and it passed" in out.stdout + out.stderr


def test_roles_have_galaxy_layout() -> None:
    for role in ROLES:
        base = PLAYBOOK_DIR / "roles" / role
        for part in ("defaults/main.yml", "meta/main.yml", "tasks/main.yml"):
            assert (base / part).is_file(), f"{role}/{part}"
        defaults = (base / "defaults/main.yml").read_text()
        assert defaults.lstrip("-\n").startswith("#"), f"{role}: defaults/main.yml must be documented"
        text = "\n".join(p.read_text() for p in (base / "tasks").glob("*.yml"))
        for line in text.splitlines():
            s = line.strip()
            if s.startswith(("ansible.", "community.")) and s.endswith(":"):
                assert s.startswith("ansible.builtin."), f"{role}: {s} is outside ansible.builtin"
    assert (PLAYBOOK_DIR / "roles/gpu_host_prep/tasks/debian.yml").exists()
    assert (PLAYBOOK_DIR / "roles/gpu_host_prep/tasks/ubuntu.yml").exists()


def test_ansible_cfg_agrees_with_the_runner(tmp_path: Path) -> None:
    """playbooks/ansible.cfg (runs by hand) and the runner's tuned environment say the same."""
    import configparser

    from gpudc.provision.runner import environment

    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(shipped("playbooks") / "ansible.cfg")
    env = environment(site="lab", ssh_key=None, known_hosts=None, hosts=1000, tuned=True, run_dir=tmp_path,
                      mitogen=False)
    defaults, ssh = cfg["defaults"], cfg["ssh_connection"]
    assert defaults["forks"] == env["ANSIBLE_FORKS"]
    assert defaults["gathering"] == env["ANSIBLE_GATHERING"]
    assert defaults["fact_caching"] == env["ANSIBLE_CACHE_PLUGIN"]
    assert defaults["fact_caching_timeout"] == env["ANSIBLE_CACHE_PLUGIN_TIMEOUT"]
    assert defaults["timeout"] == env["ANSIBLE_TIMEOUT"]
    assert defaults["task_timeout"] == env["ANSIBLE_TASK_TIMEOUT"]
    assert ssh.getboolean("pipelining") == (env["ANSIBLE_PIPELINING"] == "True")
    assert set(ssh["ssh_args"].split(" -o ")) == set(env["ANSIBLE_SSH_ARGS"].split(" -o "))
