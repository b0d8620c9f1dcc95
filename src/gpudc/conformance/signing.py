"""The site's conformance signing key and OpenSSH signatures (`ssh-keygen -Y`).

The key is an ed25519 key in the site's secret dir (`conformance_signing_ed25519`, 0600, made on
first use). Reports are signed in the `gpudc-conformance` namespace; anyone verifies them with
plain `ssh-keygen -Y verify` and an allowed-signers file whose principal is the site's name.
No key material is ever put into a message: only paths and public fingerprints.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gpudc.errors import GpudcError, InputError

NAMESPACE = "gpudc-conformance"
KEY_FILE = "conformance_signing_ed25519"
#: ssh-keygen's own work is milliseconds; this only bounds a stuck process.
KEYGEN_TIMEOUT_S = 30.0


def _ssh_keygen(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["ssh-keygen", *args], input=stdin, capture_output=True, timeout=KEYGEN_TIMEOUT_S, check=False
        )
    except FileNotFoundError:
        raise GpudcError("ssh-keygen not found (Debian package openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise GpudcError(f"ssh-keygen {args[0]} {args[1] if len(args) > 1 else ''} did not finish") from None


def _first_line(data: bytes) -> str:
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no output"


def signing_key(site: str, create: bool = True) -> tuple[Path, str]:
    """(private key path, public key line) of the site's signing key, made on first use."""
    from gpudc.secrets import site_secret_dir

    private = site_secret_dir(site) / KEY_FILE
    if not private.exists():
        if not create:
            raise InputError(f"site {site!r} has no conformance signing key yet (`gpudc conformance key`)")
        done = _ssh_keygen(["-q", "-t", "ed25519", "-N", "", "-C", f"{NAMESPACE}@{site}", "-f", str(private)])
        if done.returncode != 0:
            raise GpudcError(f"could not make the signing key of site {site!r}: {_first_line(done.stderr)}")
    os.chmod(private, 0o600)
    public = Path(f"{private}.pub").read_text().strip()
    return private, public


def allowed_signers_line(site: str, public_key: str) -> str:
    """`<site> namespaces="gpudc-conformance" <type> <base64>`: one line of an allowed-signers file."""
    key_type, key_b64 = public_key.split()[:2]
    return f'{site} namespaces="{NAMESPACE}" {key_type} {key_b64}'


def sign(private_key: Path, data: bytes) -> bytes:
    """The armored SSH signature of `data` (what `ssh-keygen -Y sign -n gpudc-conformance` writes)."""
    done = _ssh_keygen(["-Y", "sign", "-q", "-f", str(private_key), "-n", NAMESPACE], stdin=data)
    if done.returncode != 0 or b"BEGIN SSH SIGNATURE" not in done.stdout:
        raise GpudcError(f"signing failed: {_first_line(done.stderr)}")
    return done.stdout


@dataclass(frozen=True, slots=True)
class Verification:
    valid: bool
    message: str
    principals: tuple[str, ...] = ()


def verify(data: bytes, signature: bytes, allowed_signers: Path, principal: str) -> Verification:
    """Check `signature` over `data` by `principal` through `ssh-keygen -Y find-principals/verify`."""
    with tempfile.NamedTemporaryFile(prefix="gpudc-sig-", suffix=".sig") as sig:
        sig.write(signature)
        sig.flush()
        found = _ssh_keygen(["-Y", "find-principals", "-s", sig.name, "-f", str(allowed_signers)])
        principals = tuple(found.stdout.decode("utf-8", "replace").split()) if found.returncode == 0 else ()
        if not principals:
            return Verification(False, f"the signer's key is not in {allowed_signers} (unknown signer)")
        if principal not in principals:
            return Verification(
                False,
                f"the report names site {principal!r} but {allowed_signers} has its signing key "
                f"as {', '.join(principals)}",
                principals,
            )
        done = _ssh_keygen(
            ["-Y", "verify", "-f", str(allowed_signers), "-I", principal, "-n", NAMESPACE, "-s", sig.name],
            stdin=data,
        )
    if done.returncode != 0:
        return Verification(False, f"bad signature: {_first_line(done.stderr or done.stdout)}", principals)
    return Verification(True, _first_line(done.stdout), principals)
