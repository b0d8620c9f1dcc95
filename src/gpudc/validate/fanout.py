"""SSH fan-out with paramiko: one command (plus stdin) on many hosts, every step under a timeout.

Each host gets its own `paramiko.Transport` over a TCP socket (or over a `direct-tcpip` channel
of one shared jump-host transport, OpenSSH's ProxyJump). Host keys are checked against a
known_hosts file (strict by default: an unknown or changed key refuses the host; trust on first
use only with `tofu=True`, which records the key; a key listed `@revoked` is always refused).
Authentication uses one key file or the keys of the ssh-agent. The outcome of every host is
classified (`HostResult.status`) and the run always completes: a bad host costs at most its own
timeouts, never the run's.

The controller's work per host is kept small, since it bounds how many hosts one controller
serves: known_hosts is read once into an index, AES-GCM is preferred (one AEAD pass per packet),
the handshake deadline needs no timer thread. bench/validate_fanout.py measures it per node.

Nothing secret is logged or put into a result: messages carry host names, addresses, key types
and public fingerprints only.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import paramiko
from paramiko.packet import Packetizer
from typing_extensions import Buffer

from gpudc.errors import InputError

# paramiko logs transport-thread failures (banner timeouts...) at ERROR; we classify them ourselves.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

Status = Literal["ok", "unreachable", "auth", "host_key", "timeout", "deadline", "error"]

#: Key types a known_hosts entry may hold, mapped to the host key algorithms that produce them.
_KEY_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}


#: Ciphers and MACs tried first (the rest of paramiko's list stays behind them): AES-GCM is one
#: AEAD pass per packet (AES-NI on both ends) where CTR + HMAC is two; encrypt-then-MAC before
#: MAC-then-encrypt when GCM is not offered. Key exchange keeps paramiko's order (ML-KEM hybrid,
#: then curve25519): its cost is one X25519 operation either way.
_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
_MACS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-sha2-256", "hmac-sha2-512")


#: Linux's TCP_QUICKACK (None elsewhere: acknowledgements stay as the system makes them).
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def _preferred(first: Sequence[str], available: Sequence[str]) -> tuple[str, ...]:
    return tuple([a for a in first if a in available] + [a for a in available if a not in first])


class _Packetizer(Packetizer):
    """paramiko's packetizer, with the handshake deadline kept as a time instead of a
    `threading.Timer` (one thread less started and stopped per connection), and on a TCP socket
    the next segment received is acknowledged at once after each packet sent: sshd writes its
    debug message and the session's channel-open confirmation separately, and Nagle holds the
    second until the first is acknowledged, which a delayed ACK makes 40 ms on every connection."""

    _handshake_deadline: float | None = None
    _handshake_done = False

    def __init__(self, sock: socket.socket) -> None:  # or a jump host's Channel: no TCP options
        super().__init__(sock)
        self._tcp = sock if isinstance(sock, socket.socket) and _QUICKACK is not None else None

    def write_all(self, out: Buffer) -> None:
        super().write_all(out)
        if self._tcp is not None:
            with contextlib.suppress(OSError):
                self._tcp.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[arg-type]

    def start_handshake(self, timeout: float) -> None:
        if self._handshake_deadline is None:
            self._handshake_deadline = time.monotonic() + float(timeout)

    def handshake_timed_out(self) -> bool:
        if self._handshake_deadline is None or self._handshake_done:
            return False
        return time.monotonic() >= self._handshake_deadline

    def complete_handshake(self) -> None:
        self._handshake_done = True


class _Transport(paramiko.Transport):
    """paramiko's client transport, less one per-connection cost: OpenSSH's sshd sends a debug
    message after every publickey login (the key's options), which paramiko escapes byte by
    byte in Python even when nothing logs it (~0.2 ms a node). Here it is escaped only when
    paramiko's debug log is on."""

    def _parse_debug(self, m: paramiko.Message) -> None:
        m.get_boolean()  # always_display
        text = m.get_string()
        m.get_string()  # language
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("Debug msg: %r", paramiko.util.safe_string(text))


#: After the exit status, how long to wait for the channel's EOF (output still in flight).
EXIT_DRAIN_GRACE_S = 1.0


@dataclass(frozen=True, slots=True)
class JumpHost:
    """A bastion in OpenSSH's `[user@]host[:port]` form."""

    host: str
    port: int = 22
    user: str | None = None

    @classmethod
    def parse(cls, spec: str) -> JumpHost:
        user: str | None = None
        rest = spec.strip()
        if "@" in rest:
            user, rest = rest.rsplit("@", 1)
        port = 22
        if rest.startswith("["):  # [v6addr]:port
            host, _, tail = rest[1:].partition("]")
            if tail.startswith(":"):
                port = _port(tail[1:], spec)
        elif rest.count(":") == 1:
            host, _, port_text = rest.partition(":")
            port = _port(port_text, spec)
        else:
            host = rest
        if not host or (user is not None and not user):
            raise InputError(f"--jump {spec!r}: expected [user@]host[:port]")
        return cls(host, port, user)

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port}"


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InputError(f"--jump {spec!r}: port must be 1-65535")
    return int(text)


@dataclass(slots=True)
class SshOptions:
    """How to reach nodes. Paths only; no secret is held here."""

    user: str = "root"
    port: int = 22
    identity: Path | None = None  # private key file; None: the ssh-agent's keys
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts
    tofu: bool = False  # trust (and record) unknown host keys; a changed key is refused anyway
    jump: JumpHost | None = None
    parallel: int = 64
    connect_timeout: float = 10.0  # TCP connect + SSH banner and key exchange
    auth_timeout: float = 10.0
    command_timeout: float = 120.0  # the remote command, from exec to exit status
    deadline: float | None = None  # the whole run, in seconds; hosts not done by then fail
    max_output: int = 32 * 1024 * 1024  # bytes of stdout+stderr accepted from one host

    def __post_init__(self) -> None:
        problems = []
        if self.parallel < 1:
            problems.append(f"--parallel {self.parallel}: must be at least 1")
        for name in ("connect_timeout", "auth_timeout", "command_timeout"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} {getattr(self, name)}: must be positive")
        if self.deadline is not None and self.deadline <= 0:
            problems.append(f"deadline {self.deadline}: must be positive")
        if problems:
            raise InputError(problems)


@dataclass(frozen=True, slots=True)
class Target:
    """One host to run on: `name` is what reports say; `address` is what is dialled."""

    name: str
    address: str
    port: int | None = None
    host_key_alias: str | None = None  # OpenSSH HostKeyAlias: the known_hosts name to check


@dataclass(slots=True)
class HostResult:
    name: str
    status: Status
    message: str = ""
    exit_status: int | None = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    fingerprint: str = ""  # SHA256 fingerprint of the host key the host presented

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class _Refused(Exception):
    """A host refused or could not be reached; carries its classification."""

    def __init__(self, status: Status, message: str, fingerprint: str = "") -> None:
        super().__init__(message)
        self.status: Status = status
        self.message = message
        self.fingerprint = fingerprint


def fingerprint(key: paramiko.PKey) -> str:
    return _fingerprint_blob(key.asbytes())


def _fingerprint_blob(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _dialled_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


@dataclass(slots=True)
class _Credentials:
    key: paramiko.PKey | None
    use_agent: bool
    agent_error: str = ""

    @classmethod
    def load(cls, identity: Path | None) -> _Credentials:
        if identity is None:
            if not os.environ.get("SSH_AUTH_SOCK"):
                raise InputError("no --identity given and no ssh-agent (SSH_AUTH_SOCK unset)")
            return cls(None, True)
        try:
            key = paramiko.PKey.from_path(identity)
        except paramiko.PasswordRequiredException:
            raise InputError(
                f"{identity}: the key is passphrase-protected; load it into ssh-agent and omit --identity"
            ) from None
        except FileNotFoundError:
            raise InputError(f"{identity}: identity file not found") from None
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise InputError(f"{identity}: not a usable private key ({type(exc).__name__})") from None
        return cls(key, False)

    def authenticate(self, transport: paramiko.Transport, user: str, where: str) -> None:
        keys: list[paramiko.PKey]
        agent: paramiko.Agent | None = None
        if self.key is not None:
            keys = [self.key]
        else:
            agent = paramiko.Agent()
            keys = list(agent.get_keys())
        try:
            if not keys:
                raise _Refused("auth", f"{where}: no key to offer (the ssh-agent holds none)")
            for key in keys:
                try:
                    transport.auth_publickey(user, key)
                    return
                except paramiko.AuthenticationException:
                    continue
            raise _Refused("auth", f"{where}: authentication as {user!r} refused (publickey)")
        finally:
            if agent is not None:
                agent.close()


class _KnownHosts:
    """known_hosts lookups (plain and hashed entries, `@revoked` lines) and TOFU recording,
    thread-safe. The file is read once into an index: a name lookup is a dict lookup (plus one
    HMAC per hashed entry), so a 1,000-line file costs no per-node scan; keys are compared as
    their wire bytes, never parsed into key objects."""

    def __init__(self, path: Path, tofu: bool) -> None:
        self.path = path
        self.tofu = tofu
        self._plain: dict[str, list[tuple[str, bytes]]] = {}
        self._hashed: list[tuple[bytes, bytes, str, bytes]] = []  # salt, HMAC-SHA1(name), type, key
        self._revoked: set[bytes] = set()
        self._lock = threading.Lock()
        if path.exists():
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise InputError(f"{path}: unreadable known_hosts ({exc.strerror or exc})") from None
            for line in text.splitlines():
                self._parse_line(line)
        elif not tofu:
            raise InputError(
                f"{path}: known_hosts file not found (give --known-hosts, or --tofu to create it)"
            )

    def _parse_line(self, line: str) -> None:
        """One known_hosts line; lines that are not `names type base64` are skipped (as OpenSSH
        does): a host whose only line is broken is unknown, so refused."""
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            return
        marker = ""
        if fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
        if len(fields) < 3:
            return
        names, key_type, key_b64 = fields[:3]
        try:
            blob = base64.b64decode(key_b64, validate=True)
        except ValueError:
            return
        if _blob_type(blob) != key_type:
            return
        if marker == "@revoked":
            self._revoked.add(blob)
            return
        if marker:  # @cert-authority: host certificates are not used here
            return
        for name in names.split(","):
            if name.startswith("|1|"):
                salt_b64, _, digest_b64 = name[3:].partition("|")
                try:
                    salt, digest = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
                except ValueError:
                    continue
                self._hashed.append((salt, digest, key_type, blob))
            elif name:
                self._plain.setdefault(name, []).append((key_type, blob))

    def known(self, names: Sequence[str]) -> tuple[str, dict[str, list[bytes]]]:
        """The first name with entries, and its keys (wire bytes) by type ({} when none is known)."""
        for name in names:
            found: dict[str, list[bytes]] = {}
            for key_type, blob in self._plain.get(name, ()):
                found.setdefault(key_type, []).append(blob)
            if self._hashed:
                raw = name.encode()
                for salt, digest, key_type, blob in self._hashed:
                    if hmac.compare_digest(hmac.digest(salt, raw, "sha1"), digest):
                        found.setdefault(key_type, []).append(blob)
            if found:
                return name, found
        return names[0], {}

    @staticmethod
    def preferred_types(known: dict[str, list[bytes]], offered: Iterable[str]) -> list[str]:
        wanted: list[str] = []
        for key_type in known:
            wanted.extend(_KEY_ALGORITHMS.get(key_type, (key_type,)))
        offered = list(offered)
        return [t for t in wanted if t in offered] + [t for t in offered if t not in wanted]

    def verify(
        self,
        names: Sequence[str],
        key: paramiko.PKey,
        where: str,
        looked_up: tuple[str, dict[str, list[bytes]]] | None = None,
    ) -> None:
        name, known = looked_up or self.known(names)
        blob = key.asbytes()
        presented = _fingerprint_blob(blob)
        if blob in self._revoked:
            raise _Refused(
                "host_key",
                f"{where}: host key {key.get_name()} {presented} is marked @revoked in {self.path}; refused",
                presented,
            )
        if known:
            if blob in known.get(key.get_name(), ()):
                return
            expected_fps = ", ".join(f"{t} {_fingerprint_blob(b)}" for t, bs in known.items() for b in bs)
            raise _Refused(
                "host_key",
                f"{where}: HOST KEY CHANGED: presented {key.get_name()} {presented}, "
                f"{self.path} has {expected_fps} for {name}; refused",
                presented,
            )
        if not self.tofu:
            raise _Refused(
                "host_key",
                f"{where}: host key {key.get_name()} {presented} is not in {self.path} "
                f"(as {', '.join(names)}); refused (--tofu trusts and records unknown keys)",
                presented,
            )
        with self._lock:
            name, known = self.known(names)
            if known:  # another thread recorded it meanwhile
                if blob in known.get(key.get_name(), ()):
                    return
                raise _Refused(
                    "host_key", f"{where}: host key changed while being recorded; refused", presented
                )
            for n in names:
                self._plain.setdefault(n, []).append((key.get_name(), blob))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as handle:
                handle.write(f"{','.join(names)} {key.get_name()} {key.get_base64()}\n")


def _blob_type(blob: bytes) -> str:
    """The key type named inside an SSH public key blob (its first string); "" if malformed."""
    if len(blob) < 4:
        return ""
    size = int.from_bytes(blob[:4], "big")
    if size > 64 or len(blob) < 4 + size:
        return ""
    return blob[4 : 4 + size].decode("ascii", "replace")


class FanOut:
    """Runs one command on many targets. Use as a context manager (closes the jump transport)."""

    def __init__(self, options: SshOptions) -> None:
        self.options = options
        known_hosts = options.known_hosts or Path.home() / ".ssh" / "known_hosts"
        self.known_hosts = _KnownHosts(known_hosts, options.tofu)
        self.credentials = _Credentials.load(options.identity)
        self._jump: paramiko.Transport | None = None
        self._jump_error: _Refused | None = None
        self._jump_lock = threading.Lock()
        self._run_deadline = float("inf")

    def __enter__(self) -> FanOut:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._jump is not None:
            self._jump.close()
            self._jump = None

    # -- connection -------------------------------------------------------------------------

    def _socket(
        self, address: str, port: int, deadline: float, where: str
    ) -> socket.socket | paramiko.Channel:
        timeout = max(0.001, min(self.options.connect_timeout, deadline - time.monotonic()))
        if self.options.jump is not None:
            jump = self._jump_transport(deadline)
            try:
                return jump.open_channel("direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=timeout)
            except paramiko.ChannelException as exc:
                raise _Refused(
                    "unreachable", f"{where}: jump host {self.options.jump} could not connect: {exc.text}"
                ) from None
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise _Refused(
                    "unreachable", f"{where}: via jump host {self.options.jump}: {_why(exc)}"
                ) from None
        try:
            sock = socket.create_connection((address, port), timeout=timeout)
        except TimeoutError:
            raise _Refused("unreachable", f"{where}: connect timed out after {timeout:.1f}s") from None
        except OSError as exc:
            raise _Refused("unreachable", f"{where}: connect failed: {exc.strerror or exc}") from None
        # SSH packets are whole messages: Nagle's algorithm would hold each second small one back
        # for the peer's delayed ACK (40 ms on Linux) at every round trip of the handshake
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _jump_transport(self, deadline: float) -> paramiko.Transport:
        with self._jump_lock:
            if self._jump is not None and self._jump.is_active():
                return self._jump
            if self._jump_error is not None:
                raise self._jump_error
            jump = self.options.jump
            assert jump is not None
            where = f"jump host {jump}"
            try:
                sock = socket.create_connection(
                    (jump.host, jump.port),
                    timeout=min(self.options.connect_timeout, deadline - time.monotonic()),
                )
            except OSError as exc:
                self._jump_error = _Refused("unreachable", f"{where}: connect failed: {_why(exc)}")
                raise self._jump_error from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            names = [_dialled_name(jump.host, jump.port)]
            try:
                self._jump = self._handshake(sock, names, jump.user or self.options.user, deadline, where)
            except _Refused as exc:
                self._jump_error = exc
                raise
            return self._jump

    def _handshake(
        self,
        sock: socket.socket | paramiko.Channel,
        names: Sequence[str],
        user: str,
        deadline: float,
        where: str,
    ) -> paramiko.Transport:
        opts = self.options
        transport = _Transport(sock, packetizer_class=_Packetizer)
        try:
            transport.banner_timeout = opts.connect_timeout
            transport.handshake_timeout = opts.connect_timeout
            transport.auth_timeout = opts.auth_timeout
            looked_up = self.known_hosts.known(names)
            security = transport.get_security_options()
            security.key_types = self.known_hosts.preferred_types(looked_up[1], security.key_types)
            security.ciphers = _preferred(_CIPHERS, security.ciphers)
            security.digests = _preferred(_MACS, security.digests)
            try:
                transport.start_client(
                    timeout=max(0.001, min(opts.connect_timeout, deadline - time.monotonic()))
                )
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise _Refused("unreachable", f"{where}: SSH handshake failed: {_why(exc)}") from None
            if transport.host_key is None:  # start_client returns quietly on its timeout
                raise _Refused("unreachable", f"{where}: SSH handshake timed out (no banner or key exchange)")
            key = transport.get_remote_server_key()
            self.known_hosts.verify(names, key, where, looked_up)
            try:
                self.credentials.authenticate(transport, user, where)
            except paramiko.SSHException as exc:
                raise _Refused("auth", f"{where}: authentication failed: {_why(exc)}") from None
            return transport
        except BaseException:
            transport.close()
            raise

    # -- one host ---------------------------------------------------------------------------

    def run_one(self, target: Target, command: str, stdin: bytes = b"") -> HostResult:
        start = time.monotonic()
        opts = self.options
        if start >= self._run_deadline:
            return HostResult(target.name, "deadline", f"{target.name}: not started before the run deadline")
        port = target.port or opts.port
        where = f"{target.name} ({target.address}:{port})"
        names = [n for n in (target.host_key_alias, _dialled_name(target.address, port), target.name) if n]
        names = list(dict.fromkeys(names))
        transport: paramiko.Transport | None = None
        try:
            connect_deadline = min(self._run_deadline, start + opts.connect_timeout + opts.auth_timeout)
            sock = self._socket(target.address, port, connect_deadline, where)
            transport = self._handshake(sock, names, opts.user, connect_deadline, where)
            fp = fingerprint(transport.get_remote_server_key())
            timeout_s = opts.command_timeout
            remote = f"timeout -k 5 {max(1, int(timeout_s) + 1)} sh -c {shlex.quote(command)}"
            result = self._exec(
                transport, remote, stdin, min(self._run_deadline, time.monotonic() + timeout_s)
            )
            result.name, result.fingerprint = target.name, fp
            if result.status == "timeout":
                result.message = f"{where}: command did not finish within {timeout_s:g}s; closed"
            elif result.status == "deadline":
                result.message = f"{where}: command stopped at the run deadline"
            elif result.status == "error":
                result.message = f"{where}: {result.message}"
        except _Refused as refused:
            result = HostResult(target.name, refused.status, refused.message, fingerprint=refused.fingerprint)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            result = HostResult(target.name, "unreachable", f"{where}: connection lost: {_why(exc)}")
        finally:
            if transport is not None:
                # closing a transport that runs over a jump host's channel sends on the jump
                # connection, which may itself be gone (EOFError): the result stands either way
                with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
                    transport.close()
        result.seconds = time.monotonic() - start
        return result

    def _exec(self, transport: paramiko.Transport, command: str, stdin: bytes, deadline: float) -> HostResult:
        chan = transport.open_session(
            timeout=max(0.001, min(self.options.connect_timeout, deadline - time.monotonic()))
        )
        status: Status = "deadline" if deadline >= self._run_deadline else "timeout"
        try:
            chan.settimeout(max(0.001, deadline - time.monotonic()))
            chan.exec_command(command)
            if stdin:
                try:
                    chan.sendall(stdin)
                except TimeoutError:
                    return HostResult("", status)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            total_cap = self.options.max_output
            exited_at: float | None = None
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if len(out) + len(err) > total_cap:
                    return HostResult("", "error", f"output exceeds {total_cap} bytes; closed")
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    # sshd may send the exit status before the last output: wait for EOF, but only
                    # briefly, since a leftover child holding the pipes open never sends one
                    exited_at = exited_at or time.monotonic()
                    if chan.eof_received or time.monotonic() - exited_at >= EXIT_DRAIN_GRACE_S:
                        break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return HostResult("", status, stdout=out.decode("utf-8", "replace"))
                if chan.eof_received:
                    chan.status_event.wait(min(remaining, 0.25))
                else:
                    select.select([chan], [], [], min(remaining, 1.0))
            code = chan.recv_exit_status()
            return HostResult(
                "",
                "ok",
                exit_status=code,
                stdout=out.decode("utf-8", "replace"),
                stderr=err.decode("utf-8", "replace"),
            )
        finally:
            chan.close()

    # -- many hosts -------------------------------------------------------------------------

    def run(
        self,
        targets: Sequence[Target],
        command: str | Callable[[Target], str],
        stdin: bytes = b"",
        on_result: Callable[[HostResult], None] | None = None,
    ) -> list[HostResult]:
        """Results in the order of `targets`; `on_result` is called (from worker threads) per host."""
        names = [t.name for t in targets]
        if len(set(names)) != len(names):
            raise InputError("fan-out targets must have distinct names")
        start = time.monotonic()
        self._run_deadline = start + self.options.deadline if self.options.deadline else float("inf")

        def one(target: Target) -> HostResult:
            cmd = command(target) if callable(command) else command
            try:
                result = self.run_one(target, cmd, stdin)
            except Exception as exc:  # a bug must not take the run down; report it per host
                result = HostResult(
                    target.name, "error", f"{target.name}: internal error: {type(exc).__name__}"
                )
            if on_result is not None:
                on_result(result)
            return result

        workers = max(1, min(self.options.parallel, len(targets)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gpudc-ssh") as pool:
            return list(pool.map(one, targets))


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_command(
    targets: Sequence[Target],
    command: str | Callable[[Target], str],
    options: SshOptions,
    stdin: bytes = b"",
    on_result: Callable[[HostResult], None] | None = None,
) -> list[HostResult]:
    """Run `command` (with `stdin`) on every target; one HostResult per target, in order."""
    with FanOut(options) as fan:
        return fan.run(targets, command, stdin, on_result)
