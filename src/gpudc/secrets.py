"""Per-site secrets on disk: pre-generated SSH host keys and the controller's key.

They live under the site's secret dir (`gpudc.project.site_secret_dir`: default
`$XDG_STATE_HOME/gpudc/<site>/secrets`, or `GPUDC_SECRET_DIR`), mode 0700 for folders and 0600 for files, never in the repo. Reimaging a
node keeps the host key that known_hosts expects because the key is made once, here.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from gpudc.model.site import check_label
from gpudc.project import site_secret_dir


def _keygen(private: Path, comment: str) -> None:
    private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    os.chmod(private, 0o600)


def host_key(site: str, node: str) -> tuple[Path, str]:
    """(private key path, public key line) of a node's ed25519 host key, made on first use."""
    check_label(node)
    private = site_secret_dir(site) / "host-keys" / f"{node}_ed25519"
    if not private.exists():
        _keygen(private, f"root@{node}")
    public = Path(f"{private}.pub").read_text().strip()
    return private, public


def secret_file(path: Path, make: Callable[[], bytes]) -> Path:
    """A 0600 file of secret bytes, made once with `make()` (O_EXCL: an existing one is kept)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(make())
    os.chmod(path, 0o600)
    return path


def existing_host_key(site: str, node: str) -> str | None:
    """The public host key line of a node, if one was pre-generated; never makes one."""
    check_label(node)
    public = site_secret_dir(site) / "host-keys" / f"{node}_ed25519.pub"
    return public.read_text().strip() if public.exists() else None


def controller_key(site: str) -> tuple[Path, str]:
    """(private key path, public key line) of the key the controller uses to reach nodes."""
    private = site_secret_dir(site) / "controller_ed25519"
    if not private.exists():
        _keygen(private, f"gpudc@{site}")
    return private, Path(f"{private}.pub").read_text().strip()


def known_hosts_line(node: str, addresses: list[str], public_key: str) -> str:
    """A known_hosts line for a node under its name and addresses (key type and key only)."""
    key_type, key_b64 = public_key.split()[:2]
    return f"{','.join([node, *addresses])} {key_type} {key_b64}"
