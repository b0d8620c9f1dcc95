"""Fan-out against a real sshd on loopback: host keys, TOFU, auth, hangs, dead ports, jump host."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpudc.errors import InputError
from gpudc.validate.fanout import FanOut, JumpHost, SshOptions, Target, run_command

from .sshd import Sshd, free_port, keygen, start_sshd


def _known(sshd: Sshd, tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(sshd.known_hosts_line(names))
    return path


def _opts(sshd: Sshd, known: Path, **kw: object) -> SshOptions:
    base: dict[str, object] = dict(
        user=sshd.user, port=sshd.port, identity=sshd.client_key, known_hosts=known,
        connect_timeout=5.0, auth_timeout=5.0, command_timeout=10.0,
    )
    base.update(kw)
    return SshOptions(**base)  # type: ignore[arg-type]


def test_runs_command_with_stdin_and_exit_status(sshd: Sshd, tmp_path: Path) -> None:
    known = _known(sshd, tmp_path, ["n1", "n2"])
    targets = [Target("n1", "127.0.0.1"), Target("n2", "127.0.0.2")]
    payload = ("x" * 100_000 + "\n").encode()
    seen: list[str] = []
    results = run_command(targets, "wc -c; echo oops >&2; exit 7", _opts(sshd, known), stdin=payload,
                          on_result=lambda r: seen.append(r.name))
    assert [r.name for r in results] == ["n1", "n2"]
    for r in results:
        assert r.status == "ok", r.message
        assert r.stdout.strip() == str(len(payload))
        assert r.stderr.strip() == "oops"
        assert r.exit_status == 7
        assert r.fingerprint.startswith("SHA256:")
    assert sorted(seen) == ["n1", "n2"]


def test_host_key_lookup_by_dialled_address_and_alias(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line([f"[127.0.0.1]:{sshd.port}"]) + sshd.known_hosts_line(["alias-x"]))
    results = run_command(
        [Target("by-address", "127.0.0.1"), Target("by-alias", "127.0.0.2", host_key_alias="alias-x")],
        "true", _opts(sshd, known))
    assert [r.status for r in results] == ["ok", "ok"], [r.message for r in results]


def test_unknown_host_key_is_refused_without_tofu(sshd: Sshd, tmp_path: Path) -> None:
    known = _known(sshd, tmp_path, ["someone-else"])
    (r,) = run_command([Target("n1", "127.0.0.1")], "touch /tmp/should-not-run", _opts(sshd, known))
    assert r.status == "host_key"
    assert "not in" in r.message and "refused" in r.message and "--tofu" in r.message


def test_changed_host_key_is_refused_even_with_tofu(sshd: Sshd, tmp_path: Path) -> None:
    other_pub = keygen(tmp_path / "impostor", "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line(["n1"], other_pub))
    before = known.read_text()
    (r,) = run_command([Target("n1", "127.0.0.1")], "true", _opts(sshd, known, tofu=True))
    assert r.status == "host_key"
    assert "HOST KEY CHANGED" in r.message
    assert known.read_text() == before  # nothing recorded over the pinned key


def test_tofu_records_key_and_next_run_is_strict(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "sub" / "known_hosts"
    targets = [Target("n1", "127.0.0.1"), Target("n2", "127.0.0.2")]
    results = run_command(targets, "true", _opts(sshd, known, tofu=True))
    assert [r.status for r in results] == ["ok", "ok"], [r.message for r in results]
    text = known.read_text()
    assert "n1" in text and "n2" in text and sshd.host_key_pub.split()[1] in text
    assert known.stat().st_mode & 0o777 == 0o600
    again = run_command(targets, "true", _opts(sshd, known, tofu=False))
    assert [r.status for r in again] == ["ok", "ok"]


def test_auth_failure(sshd: Sshd, tmp_path: Path) -> None:
    known = _known(sshd, tmp_path, ["n1", "n5"])
    results = run_command(
        [Target("n1", "127.0.0.1"), Target("n5", "127.0.0.5")], "true",
        _opts(sshd, known, identity=sshd.other_key))
    assert all(r.status == "auth" for r in results), [r.message for r in results]
    assert "refused" in results[0].message
    # the key's path or material never shows up in a message
    assert str(sshd.other_key) not in results[0].message


def test_hung_command_is_bounded(sshd: Sshd, tmp_path: Path) -> None:
    known = _known(sshd, tmp_path, ["hang", "ok"])
    start = time.monotonic()
    results = run_command([Target("hang", "127.0.0.4"), Target("ok", "127.0.0.1")], "echo fine",
                          _opts(sshd, known, command_timeout=2.0))
    elapsed = time.monotonic() - start
    assert results[0].status == "timeout" and "within 2s" in results[0].message
    assert results[1].status == "ok" and results[1].stdout == "fine\n"
    assert elapsed < 8


def test_unreachable_port_and_silent_listener(sshd: Sshd, tmp_path: Path) -> None:
    known = _known(sshd, tmp_path, ["dead", "silent"])
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)  # accepts TCP, never speaks SSH: a wedged sshd
    try:
        start = time.monotonic()
        results = run_command(
            [Target("dead", "127.0.0.1", port=free_port()),
             Target("silent", "127.0.0.1", port=silent.getsockname()[1])],
            "true", _opts(sshd, known, connect_timeout=1.5))
        elapsed = time.monotonic() - start
    finally:
        silent.close()
    assert results[0].status == "unreachable" and "connect failed" in results[0].message
    assert results[1].status == "unreachable" and "handshake" in results[1].message
    assert elapsed < 8


def test_run_deadline_stops_the_run(sshd: Sshd, tmp_path: Path) -> None:
    known = _known(sshd, tmp_path, [f"h{i}" for i in range(4)])
    targets = [Target(f"h{i}", "127.0.0.4") for i in range(4)]  # all hang
    start = time.monotonic()
    results = run_command(targets, "true", _opts(sshd, known, parallel=2, command_timeout=30, deadline=2.0))
    assert time.monotonic() - start < 8
    assert {r.status for r in results} == {"deadline"}


def test_jump_host(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line([f"[127.0.0.1]:{sshd.port}", "n2", "n3"]))
    jump = JumpHost.parse(f"{sshd.user}@127.0.0.1:{sshd.port}")
    results = run_command([Target("n2", "127.0.0.2"), Target("n3", "127.0.0.3")],
                          "echo $SSH_CONNECTION", _opts(sshd, known, jump=jump))
    assert results[0].status == "ok", results[0].message
    # the inner connection comes from the jump host (the server itself), to the address dialled
    assert results[0].stdout.split()[2] == "127.0.0.2"
    assert "not probe output" in results[1].stdout  # 127.0.0.3 forces its own command


def test_dead_jump_host_fails_every_target_fast(sshd: Sshd, tmp_path: Path) -> None:
    known = _known(sshd, tmp_path, ["n1", "n2"])
    jump = JumpHost.parse(f"127.0.0.1:{free_port()}")
    results = run_command([Target("n1", "127.0.0.1"), Target("n2", "127.0.0.2")], "true",
                          _opts(sshd, known, jump=jump))
    assert {r.status for r in results} == {"unreachable"}
    assert all("jump host" in r.message for r in results)


def test_bad_options_are_input_errors(sshd: Sshd, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="known_hosts file not found"):
        FanOut(_opts(sshd, tmp_path / "missing"))
    with pytest.raises(InputError, match="identity file not found"):
        FanOut(_opts(sshd, _known(sshd, tmp_path, ["x"]), identity=tmp_path / "nokey"))
    with pytest.raises(InputError, match="parallel"):
        SshOptions(parallel=0)
    with pytest.raises(InputError):
        JumpHost.parse("user@")
    assert JumpHost.parse("ops@bastion:2222") == JumpHost("bastion", 2222, "ops")
    assert JumpHost.parse("bastion") == JumpHost("bastion", 22, None)


def _hashed(name: str) -> str:
    """OpenSSH's HashKnownHosts form of a name: |1|salt|HMAC-SHA1(salt, name)."""
    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def test_hashed_known_hosts_entries(sshd: Sshd, tmp_path: Path) -> None:
    other_pub = keygen(tmp_path / "impostor", "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line([_hashed("n1")]) + sshd.known_hosts_line([_hashed("n2")], other_pub))
    ok, changed, unknown = run_command(
        [Target("n1", "127.0.0.1"), Target("n2", "127.0.0.2"), Target("n3", "127.0.0.1")], "true",
        _opts(sshd, known))
    assert ok.status == "ok", ok.message
    assert changed.status == "host_key" and "HOST KEY CHANGED" in changed.message
    assert unknown.status == "host_key" and "not in" in unknown.message


def test_any_known_key_of_a_host_is_accepted_and_broken_lines_are_skipped(sshd: Sshd, tmp_path: Path) -> None:
    old_pub = keygen(tmp_path / "old", "old")
    known = tmp_path / "known_hosts"
    known.write_text(
        "# comment\n\n"
        "n2 ssh-ed25519 not-base64!\n"  # broken: skipped, so n2 stays unknown
        "n3 ssh-rsa " + sshd.host_key_pub.split()[1] + "\n"  # type does not match the blob: skipped
        + sshd.known_hosts_line(["n1"], old_pub)  # a key rotated out, still listed
        + sshd.known_hosts_line(["n1"])
    )
    results = run_command([Target("n1", "127.0.0.1"), Target("n2", "127.0.0.2"), Target("n3", "127.0.0.2")],
                          "true", _opts(sshd, known))
    assert [r.status for r in results] == ["ok", "host_key", "host_key"], [r.message for r in results]
    assert "not in" in results[1].message and "not in" in results[2].message


def test_revoked_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line(["n1"]) + "@revoked " + sshd.known_hosts_line(["*"]))
    (r,) = run_command([Target("n1", "127.0.0.1")], "touch /tmp/should-not-run", _opts(sshd, known, tofu=True))
    assert r.status == "host_key" and "@revoked" in r.message


def test_falls_back_to_the_algorithms_a_server_offers(tmp_path: Path) -> None:
    """gpudc prefers AES-GCM; a server that only has CTR + HMAC-SHA2-512 still works."""
    server = start_sshd(tmp_path / "sshd", "Ciphers aes256-ctr\nMACs hmac-sha2-512\nKexAlgorithms curve25519-sha256@libssh.org")
    try:
        known = tmp_path / "known_hosts"
        known.write_text(server.known_hosts_line(["n1"]))
        (r,) = run_command([Target("n1", "127.0.0.1")], "echo hi", _opts(server, known))
        assert r.status == "ok" and r.stdout == "hi\n", r.message
    finally:
        server.stop()


@pytest.fixture
def stalled_server() -> Iterator[int]:
    """Says an SSH banner, then never answers the key exchange: a wedged sshd after accept."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 stalled\r\n")
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()


def test_stalled_key_exchange_is_bounded(sshd: Sshd, tmp_path: Path, stalled_server: int) -> None:
    known = _known(sshd, tmp_path, ["stalled", "ok"])
    start = time.monotonic()
    results = run_command([Target("stalled", "127.0.0.1", port=stalled_server), Target("ok", "127.0.0.1")],
                          "echo fine", _opts(sshd, known, connect_timeout=1.5))
    elapsed = time.monotonic() - start
    assert results[0].status == "unreachable" and "handshake" in results[0].message
    assert results[1].status == "ok"
    assert elapsed < 8
