"""nvidia_repo renders the right sources, keyring and pins for each OS (as text; no download)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpudc.catalog import PACKAGE_ROLES, load_catalog
from gpudc.resources import shipped

BIN = Path(sys.executable).parent
OFFICIAL = "https://developer.download.nvidia.com/compute/cuda/repos"
KEYRING = "/usr/share/keyrings/cuda-archive-keyring.gpg"

CASES: dict[str, dict[str, Any]] = {
    "debian12-x86": {"gpudc_os": "debian12", "nvidia_repo_arch": "x86_64", "family": "debian", "release": "bookworm"},
    "ubuntu2204-x86": {"gpudc_os": "ubuntu2204", "nvidia_repo_arch": "x86_64", "family": "ubuntu", "release": "jammy"},
    "ubuntu2404-sbsa": {"gpudc_os": "ubuntu2404", "nvidia_repo_arch": "sbsa", "family": "ubuntu", "release": "noble"},
    "debian12-mirror": {"gpudc_os": "debian12", "nvidia_repo_arch": "x86_64", "family": "debian", "release": "bookworm",
                        "gpudc_mirror_url": "http://mirror.site.internal"},
    "ubuntu2404-mirror": {"gpudc_os": "ubuntu2404", "nvidia_repo_arch": "x86_64", "family": "ubuntu",
                          "release": "noble", "gpudc_mirror_url": "http://mirror.site.internal"},
}

PLAY = """
- name: Render nvidia_repo files
  hosts: all
  gather_facts: false
  tasks:
    - name: Render sources and pins
      ansible.builtin.include_role:
        name: nvidia_repo
        tasks_from: render.yml
        public: true
    - name: Render the Debian mirror sources
      ansible.builtin.include_role:
        name: nvidia_repo
        tasks_from: os_mirror_debian.yml
      when: nvidia_repo_os_mirror_url | length > 0 and nvidia_repo_os_family == 'debian'
    - name: Render the Ubuntu mirror sources
      ansible.builtin.include_role:
        name: nvidia_repo
        tasks_from: os_mirror_ubuntu.yml
      when: nvidia_repo_os_mirror_url | length > 0 and nvidia_repo_os_family == 'ubuntu'
    - name: Record the keyring the role would install
      ansible.builtin.copy:
        dest: "{{ nvidia_repo_apt_dir }}/keyring.txt"
        content: "{{ nvidia_repo_keyring_url }}\\n{{ nvidia_repo_keyring_path }}\\n"
        mode: "0644"
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("repo-render")
    profile = load_catalog().profiles["r580-cuda13.0"]
    hosts = {}
    for name, case in CASES.items():
        apt_dir = tmp / name
        (apt_dir / "sources.list.d").mkdir(parents=True)
        (apt_dir / "preferences.d").mkdir()
        table = profile.os[case["gpudc_os"]].packages
        hosts[name] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "nvidia_repo_apt_dir": str(apt_dir),
            "nvidia_repo_os_family": case["family"],
            "nvidia_repo_os_release": case["release"],
            "gpudc_profile": profile.name,
            "gpudc_packages": {r: {p.name: p.version for p in table.get(r, [])} for r in PACKAGE_ROLES},
            **{k: v for k, v in case.items() if k not in ("family", "release")},
        }
    (tmp / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    (tmp / "play.yml").write_text(PLAY)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "ANSIBLE_HOME": str(tmp / "ah"),
           "ANSIBLE_ROLES_PATH": str(shipped("playbooks") / "roles")}
    out = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(tmp / "hosts.yml"), str(tmp / "play.yml")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    return tmp


def lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize(("host", "os_name", "arch"), [
    ("debian12-x86", "debian12", "x86_64"), ("ubuntu2204-x86", "ubuntu2204", "x86_64"),
    ("ubuntu2404-sbsa", "ubuntu2404", "sbsa"),
])
def test_official_sources_and_keyring(rendered: Path, host: str, os_name: str, arch: str) -> None:
    url = f"{OFFICIAL}/{os_name}/{arch}/"
    sources = rendered / host / "sources.list.d" / f"cuda-{os_name}-{arch}.list"
    assert lines(sources) == [f"deb [signed-by={KEYRING}] {url} /"]
    assert (rendered / host / "keyring.txt").read_text().split() == [f"{url}cuda-keyring_1.1-1_all.deb", KEYRING]
    assert not (rendered / host / "sources.list").exists(), "official mode leaves the OS sources alone"


def test_pins_are_the_profiles_exact_versions(rendered: Path) -> None:
    profile = load_catalog().profiles["r580-cuda13.0"]
    for host, os_name in (("debian12-x86", "debian12"), ("ubuntu2204-x86", "ubuntu2204")):
        text = (rendered / host / "preferences.d" / "gpudc-profile.pref").read_text()
        stanzas = [s for s in text.split("\n\n") if s.startswith("Package:")]
        pins = {s.splitlines()[0].split()[1]: s.splitlines()[1].split(None, 2)[2] for s in stanzas}
        expected = {p.name: p.version for pkgs in profile.os[os_name].packages.values() for p in pkgs}
        assert pins == expected
        assert all("Pin-Priority: 1001" in s for s in stanzas)


def test_mirror_moves_every_repository(rendered: Path) -> None:
    deb = rendered / "debian12-mirror"
    assert lines(deb / "sources.list.d" / "cuda-debian12-x86_64.list") == [
        f"deb [signed-by={KEYRING}] http://mirror.site.internal/compute/cuda/repos/debian12/x86_64/ /"]
    assert lines(deb / "sources.list") == [
        "deb http://mirror.site.internal/debian bookworm main contrib non-free non-free-firmware",
        "deb http://mirror.site.internal/debian bookworm-updates main contrib non-free non-free-firmware",
        "deb http://mirror.site.internal/debian-security bookworm-security main contrib non-free non-free-firmware",
    ]
    ubu = rendered / "ubuntu2404-mirror"
    text = (ubu / "sources.list.d" / "ubuntu.sources").read_text()
    assert "URIs: http://mirror.site.internal/ubuntu" in text and "Suites: noble noble-updates noble-security" in text
    assert lines(ubu / "sources.list") == []
    assert (ubu / "keyring.txt").read_text().split()[0] == (
        "http://mirror.site.internal/compute/cuda/repos/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb")
