"""The lab hosts' root filesystem: one Debian 12 tree built with mmdebstrap, cached as a zstd tarball.

The cache lives outside the repo (`$GPUDC_LAB_CACHE`, default `~/.cache/gpudc/lab`) and its name
carries a hash of the recipe, so a changed recipe builds a new one and an unchanged one is reused.
Everything that differs per host (hostname, address, keys, machine-id, simulated GPU) is written
into each host's overlay at `lab up`, never into the shared tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from gpudc.errors import GpudcError

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"

#: Packages on top of minbase: what the issue lists plus what Ansible's apt/systemd/service modules use.
PACKAGES = (
    "python3",
    "python3-apt",
    "openssh-server",
    "sudo",
    "iproute2",
    "systemd",
    "systemd-sysv",
    "dbus",
    "procps",
    "kmod",
    "ca-certificates",
    "gpg",
    "pciutils",
    # Slurm 22.05 (Debian 12): slurmd and munge for the nodes (the slurm role installs them on any
    # node; here they are cached so a lab provision or reimage does not fetch them), slurmctld and
    # the clients for the lab's controller container (gpudc.lab.slurm), made from this same tree.
    "munge",
    "slurmd",
    "slurmctld",
    "slurm-client",
    # A reimaged host boots as a freshly installed node does: cloud-init fetches its rendered seed
    # from the boot server (NoCloud seedfrom) and applies it; locales for its locale module.
    "cloud-init",
    "locales",
)

#: Units a lab host never needs; masking them makes 16 hosts boot in seconds on 2 cores.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "getty.target",
    "console-getty.service",
    "systemd-timesyncd.service",
    "systemd-networkd-wait-online.service",
    "systemd-resolved.service",
    "ssh.socket",
    "man-db.timer",
    "logrotate.timer",
    "systemd-tmpfiles-clean.timer",
)

SSHD_CONFIG = """\
# gpudc lab: fast fan-out (no PAM session setup), many parallel connections, keys only.
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
MaxStartups 200:30:400
MaxSessions 64
HostKey /etc/ssh/ssh_host_ed25519_key
"""

# Shell run by mmdebstrap's customize hook with the new root as "$1".
CUSTOMIZE = r"""
set -e
root="$1"
rm -f "$root"/etc/ssh/ssh_host_*
printf '%s' "$SSHD_CONFIG" > "$root"/etc/ssh/sshd_config.d/gpudc-lab.conf
for unit in $MASKED_UNITS; do ln -sf /dev/null "$root/etc/systemd/system/$unit"; done
: > "$root"/etc/machine-id
mkdir -p "$root"/root/.ssh && chmod 700 "$root"/root/.ssh
# Slurm daemons start only once configured (slurm role / gpudc.lab.slurm); munge's key is the
# site's, never one shared by every host built from this tree.
rm -f "$root"/etc/munge/munge.key
for unit in munge slurmd slurmctld; do rm -f "$root/etc/systemd/system/multi-user.target.wants/$unit.service"; done
# Hosts take their addresses by DHCP (systemd-networkd; each host's .network file is written at
# lab up). cloud-init is off (its documented switch, /etc/cloud/cloud-init.disabled) until a
# reimage gives a host its NoCloud seed URL and removes the switch; it then looks only for NoCloud,
# so no other datasource probes a metadata address.
mkdir -p "$root"/etc/systemd/system/multi-user.target.wants "$root"/etc/systemd/system/sockets.target.wants
ln -sf /lib/systemd/system/systemd-networkd.service "$root"/etc/systemd/system/multi-user.target.wants/systemd-networkd.service
ln -sf /lib/systemd/system/systemd-networkd.socket "$root"/etc/systemd/system/sockets.target.wants/systemd-networkd.socket
: > "$root"/etc/cloud/cloud-init.disabled
# the locale cloud-init's locale module sets by default, generated once here
sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' "$root"/etc/locale.gen
chroot "$root" locale-gen >/dev/null
"""


def cache_dir() -> Path:
    base = os.environ.get("GPUDC_LAB_CACHE") or str(Path.home() / ".cache" / "gpudc" / "lab")
    return Path(base)


def recipe() -> dict[str, object]:
    return {
        "suite": SUITE,
        "mirror": MIRROR,
        "variant": "minbase",
        "packages": sorted(PACKAGES),
        "masked": sorted(MASKED_UNITS),
        "sshd": SSHD_CONFIG,
        "customize": CUSTOMIZE,
        "version": 1,
    }


def recipe_hash() -> str:
    blob = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def tarball_path() -> Path:
    return cache_dir() / f"rootfs-{recipe_hash()}.tar.zst"


def ensure_rootfs(progress: bool = True) -> Path:
    """The cached tarball of the current recipe, built first if missing (~1-2 minutes)."""
    path = tarball_path()
    if path.exists():
        return path
    for tool in ("mmdebstrap", "zstd"):
        if shutil.which(tool) is None:
            raise GpudcError(f"lab: `{tool}` is not installed (apt-get install mmdebstrap zstd)")
    path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SSHD_CONFIG=SSHD_CONFIG, MASKED_UNITS=" ".join(MASKED_UNITS))
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as tmp:
        tar = Path(tmp) / "rootfs.tar"
        hook = Path(tmp) / "customize.sh"
        hook.write_text(CUSTOMIZE)
        cmd = [
            "mmdebstrap",
            "--variant=minbase",
            "--mode=root",
            "--format=tar",
            f"--include={','.join(PACKAGES)}",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-include=/usr/share/locale/locale.alias",
            f'--customize-hook=sh {hook} "$1"',
            SUITE,
            str(tar),
            MIRROR,
        ]
        if not progress:
            cmd.insert(1, "--quiet")
        result = subprocess.run(cmd, env=env, capture_output=not progress, text=True, timeout=1800)
        if result.returncode != 0:
            detail = (result.stderr or "")[-2000:] if not progress else ""
            raise GpudcError(f"lab: mmdebstrap failed (exit {result.returncode}) {detail}".strip())
        partial = Path(tmp) / "rootfs.tar.zst"
        subprocess.run(["zstd", "-q", "-T0", "-3", str(tar), "-o", str(partial)], check=True, timeout=600)
        os.replace(partial, path)
    for old in path.parent.glob("rootfs-*.tar.zst"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


def extract(tarball: Path, dest: Path) -> None:
    """Unpack the cached tree into dest (a tmpfs), keeping owners, modes and xattrs."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["tar", "--zstd", "-xf", str(tarball), "-C", str(dest), "--numeric-owner", "--xattrs",
         "--xattrs-include=*"],
        check=True,
        timeout=300,
    )
