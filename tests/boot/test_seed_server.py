"""The seed server over loopback: distinct 127.0.0.x source addresses are distinct nodes.

Own seed 200 with the rendered content, another node's 403, unknown token 404, the refusals logged
with a short token prefix only; HTTPS with a throwaway CA; bounded connections and timeouts."""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gpudc.boot import tls, tokens
from gpudc.boot.seed_server import SeedServer, TlsFiles, serve
from gpudc.lab.services import stop_child
from gpudc.plan.types import Plan
from gpudc.render.checks import check_tree

NODE_A, NODE_B = "h200-01", "h200-02"


@pytest.fixture
def server(lab_render: tuple[Plan, Path], loopback_plan: Plan) -> Iterator[SeedServer]:
    srv = serve(lab_render[1], loopback_plan, "127.0.0.1", 0)
    try:
        yield srv
    finally:
        srv.shutdown()


def address(plan: Plan, node: str) -> str:
    return plan.node(node).addresses["inband"]


def get(srv: SeedServer, path: str, source: str, context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1") -> tuple[int, bytes]:
    port = srv.server_address[1]
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection(host, port, timeout=5, source_address=(source, 0))
    else:
        conn = http.client.HTTPSConnection(host, port, timeout=5, source_address=(source, 0), context=context)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def seed(plan: Plan, node: str, file: str) -> str:
    return f"/gpudc/lab/seed/{tokens.node_token(plan.site.name, node)}/{file}"


def test_own_seed_200_other_403_unknown_404(server: SeedServer, loopback_plan: Plan, lab_render: tuple[Plan, Path],
                                            caplog: pytest.LogCaptureFixture) -> None:
    plan, tree = loopback_plan, lab_render[1]
    a, b = address(plan, NODE_A), address(plan, NODE_B)
    assert a != b and a.startswith("127.0.0.") and b.startswith("127.0.0.")  # two loopback nodes
    caplog.set_level(logging.INFO, logger="gpudc.boot")
    for file in ("user-data", "meta-data", "node.ipxe"):
        status, body = get(server, seed(plan, NODE_A, file), a)
        assert status == 200 and body == (tree / "pxe" / "nodes" / NODE_A / file).read_bytes(), file
    assert get(server, seed(plan, NODE_A, "vendor-data"), a) == (200, b"")
    status, body = get(server, seed(plan, NODE_B, "user-data"), b)  # the other node, from its own address
    assert status == 200 and yaml.safe_load(body)["hostname"] == NODE_B
    # A asks for B's seed; B asks for A's
    assert get(server, seed(plan, NODE_B, "user-data"), a)[0] == 403
    assert get(server, seed(plan, NODE_A, "node.ipxe"), b)[0] == 403
    assert get(server, "/gpudc/lab/seed/" + "A" * 32 + "/user-data", a)[0] == 404
    assert get(server, "/seed/not-a-token/user-data", a)[0] == 404
    # the short form without the site prefix, and a file a seed folder does not have
    assert get(server, seed(plan, NODE_A, "user-data").removeprefix("/gpudc/lab"), a)[0] == 200
    assert get(server, seed(plan, NODE_A, "secret.key"), a)[0] == 404
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for node in (NODE_A, NODE_B):
        token = tokens.node_token(plan.site.name, node)
        assert token not in logged and token[:tokens.LOG_PREFIX] in logged
    assert "PRIVATE KEY" not in logged
    assert f"{a}: seed of {NODE_B}" in logged and "403" in logged and "unknown seed token AAAAAA..." in logged


def test_public_files_and_what_is_never_public(server: SeedServer, loopback_plan: Plan,
                                               lab_render: tuple[Plan, Path]) -> None:
    tree = lab_render[1]
    outsider = "127.0.0.99"  # no node's address
    for rel in ("pxe/boot.ipxe", "pxe/h200.ipxe", "pxe/gb200.ipxe", "pxe/h200.preseed.cfg"):
        assert get(server, f"/gpudc/lab/{rel}", outsider) == (200, (tree / rel).read_bytes()), rel
    for rel in ("pxe/nodes/h200-01/user-data", "pxe/nodes/h200-01/node.ipxe", "dhcp/kea-dhcp4.conf", "README.md",
                "pxe/../dhcp/kea-dhcp4.conf", "pxe/%2e%2e/dhcp/kea-dhcp4.conf", "inventory/hosts.yml", "seed/"):
        assert get(server, f"/gpudc/lab/{rel}", outsider)[0] == 404, rel
    assert get(server, seed(loopback_plan, NODE_A, "user-data"), outsider)[0] == 403


def test_kernels_in_the_tree_are_public(lab_render: tuple[Plan, Path], loopback_plan: Plan, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(lab_render[1], tree)
    boot = loopback_plan.node(NODE_A).boot
    kernel = tree / boot.path / boot.kernel
    kernel.parent.mkdir(parents=True)
    kernel.write_bytes(b"\x7fkernel" * 1000)
    kernel.chmod(0o644)
    (tree / "ipxe").mkdir()
    (tree / "ipxe" / "secret.bin").write_bytes(b"x")
    (tree / "ipxe" / "secret.bin").chmod(0o600)  # kept from others: never public
    srv = serve(tree, loopback_plan, "127.0.0.1", 0)
    try:
        assert get(srv, f"/gpudc/lab/{boot.path}/{boot.kernel}", "127.0.0.99") == (200, kernel.read_bytes())
        assert get(srv, "/gpudc/lab/ipxe/secret.bin", "127.0.0.99")[0] == 404
        assert get(srv, f"/gpudc/lab/{boot.path}/nothing", "127.0.0.99")[0] == 404
    finally:
        srv.shutdown()


def test_served_user_data_passes_the_cloud_init_schema(server: SeedServer, loopback_plan: Plan,
                                                       tmp_path: Path) -> None:
    for node in loopback_plan.nodes:
        status, body = get(server, seed(loopback_plan, node.name, "user-data"), address(loopback_plan, node.name))
        assert status == 200
        out = tmp_path / "pxe" / "nodes" / node.name / "user-data"
        out.parent.mkdir(parents=True)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
    results = {r.name: r for r in check_tree(tmp_path)}
    schema = results["cloud-init schema"]
    if schema.status == "unavailable":
        pytest.skip(schema.detail)
    assert schema.status == "ok", schema.detail


def test_the_site_ca_issues_the_boot_servers_certificate() -> None:
    ca_key, ca = tls.site_ca("lab")
    cert, key = tls.server_files("lab", ["127.0.0.1"])
    assert stat.S_IMODE(os.stat(ca_key).st_mode) == stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert tls.site_ca("lab") == (ca_key, ca) and tls.server_files("lab", ["127.0.0.1"]) == (cert, key)
    first = cert.read_bytes()
    assert tls.server_files("lab", ["127.0.0.1"]) and cert.read_bytes() == first  # kept while it fits
    tls.server_files("lab", ["127.0.0.2"])
    assert cert.read_bytes() != first  # another address: reissued
    tls.server_files("lab", ["127.0.0.1"])


def test_https_with_the_site_ca(lab_render: tuple[Plan, Path], loopback_plan: Plan) -> None:
    _, ca = tls.site_ca("lab")
    cert, key = tls.server_files("lab", ["127.0.0.1"])
    srv = serve(lab_render[1], loopback_plan, "127.0.0.1", 0, TlsFiles(cert, key))
    try:
        assert srv.url.startswith("https://127.0.0.1:")
        trusting = ssl.create_default_context(cafile=str(ca))  # verifies the chain and the IP SAN
        a, b = address(loopback_plan, NODE_A), address(loopback_plan, NODE_B)
        status, body = get(srv, seed(loopback_plan, NODE_A, "user-data"), a, trusting)
        assert status == 200 and body == (lab_render[1] / "pxe/nodes" / NODE_A / "user-data").read_bytes()
        assert get(srv, seed(loopback_plan, NODE_A, "user-data"), b, trusting)[0] == 403
        assert get(srv, "/gpudc/lab/pxe/boot.ipxe", b, trusting)[0] == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            get(srv, "/gpudc/lab/pxe/boot.ipxe", a, ssl.create_default_context())  # not the system's CAs
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):  # plain HTTP to the TLS port
            get(srv, "/gpudc/lab/pxe/boot.ipxe", a)
    finally:
        srv.shutdown()


def test_connections_are_capped_and_time_out(lab_render: tuple[Plan, Path], loopback_plan: Plan) -> None:
    srv = serve(lab_render[1], loopback_plan, "127.0.0.1", 0, max_connections=1, request_timeout=0.5)
    port = srv.server_address[1]
    try:
        idle = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.21", 0))
        time.sleep(0.2)  # the idle connection holds the one slot
        second = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.22", 0))
        second.sendall(b"GET /gpudc/lab/pxe/boot.ipxe HTTP/1.0\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):
            assert second.recv(100) == b""  # closed without an answer
        second.close()
        started = time.monotonic()
        assert idle.recv(100) == b""
        assert time.monotonic() - started < 3  # the idle connection was ended by the timeout
        idle.close()
        time.sleep(0.2)
        assert get(srv, "/gpudc/lab/pxe/boot.ipxe", "127.0.0.23")[0] == 200  # the slot is free again
    finally:
        srv.shutdown()


def test_cli_serves_in_a_subprocess(lab_render: tuple[Plan, Path], boot_secret_dir: Path) -> None:
    env = {**os.environ, "GPUDC_SECRET_DIR": str(boot_secret_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "gpudc.cli", "boot", "serve", "--stack", "lab", "--dir",
                             str(lab_render[1]), "--host", "127.0.0.1", "--port", "0"],
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving" in line and " at http://127.0.0.1:" in line, line
        port = int(line.split(" at http://127.0.0.1:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/gpudc/lab/pxe/boot.ipxe")
        assert conn.getresponse().status == 200
        conn.close()
        plan = lab_render[0]  # the real plan: 127.0.0.1 is no node's address
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", seed(plan, NODE_A, "user-data"))
        assert conn.getresponse().status == 403
        conn.close()
    finally:
        stop_child(proc)
    assert proc.stderr is not None
    rest = proc.stderr.read()
    assert tokens.node_token("lab", NODE_A) not in rest and "seed of h200-01" in rest


def test_cli_rejects_half_a_tls_pair(lab_render: tuple[Plan, Path], tmp_path: Path) -> None:
    from gpudc.cli import main

    assert main(["boot", "serve", "--stack", "lab", "--dir", str(lab_render[1]), "--tls-cert",
                 str(tmp_path / "c.pem")]) == 2


def test_cli_rejects_unloadable_tls_files(lab_render: tuple[Plan, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from gpudc.cli import main

    (tmp_path / "c.pem").write_text("not a certificate\n")
    (tmp_path / "k.pem").write_text("not a key\n")
    assert main(["boot", "serve", "--stack", "lab", "--dir", str(lab_render[1]), "--tls-cert",
                 str(tmp_path / "c.pem"), "--tls-key", str(tmp_path / "k.pem")]) == 2
    assert "cannot load" in capsys.readouterr().err
