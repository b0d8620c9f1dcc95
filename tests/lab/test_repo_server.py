"""The stand-in NVIDIA repository's server answers pipelined requests on one connection, as
apt's http method sends them (no root, loopback only)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from gpudc.lab.repo_server import make_server


def test_pipelined_requests_get_every_answer_on_one_connection(tmp_path: Path) -> None:
    (tmp_path / "InRelease").write_text("release\n")
    (tmp_path / "Packages").write_text("Package: libnccl2\n")
    server = make_server("127.0.0.1", 0, str(tmp_path))
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            requests = "".join(
                f"GET /{name} HTTP/1.1\r\nHost: repo\r\n\r\n" for name in ("InRelease", "missing", "Packages")
            )
            conn.sendall(requests.encode())  # all three before reading any answer
            data = b""
            while data.count(b"HTTP/1.") < 3 or not data.endswith(b"libnccl2\n"):
                chunk = conn.recv(65536)
                assert chunk, f"connection closed after {data.count(b'HTTP/1.')} answers: {data!r}"
                data += chunk
        statuses = [line.split()[1] for line in data.decode(errors="replace").splitlines() if line.startswith("HTTP/1.1 ")]
        assert statuses == ["200", "404", "200"]
        assert b"release\n" in data
    finally:
        server.shutdown()
        server.server_close()
