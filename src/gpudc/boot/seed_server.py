"""The seed server: a rendered tree over HTTP(S), each node's seed only to that node.

Public (no secret): the iPXE scripts directly in `pxe/` (`boot.ipxe`, `<pool>.ipxe`), the
preseed files, and kernels, initrds, ISOs and iPXE binaries where the operator put them in the
tree (`ipxe/`, and each pool's `boot.path`, e.g. `os/debian12/amd64/`).

Per node: `/seed/<token>/{node.ipxe,user-data,meta-data,vendor-data}`, answered only when
the token is a node's token (else 404) and the request comes from that node's planned
in-band address (else 403). Both refusals are logged with a short token prefix only; no
log line carries a whole token or any seed content. Every path may also carry the rendered
base's `/gpudc/<site>` prefix.

Bounded: every connection has a timeout (TLS handshake included, done in the worker thread,
never in the accept loop), at most `max_connections` are served at once (more are closed at
once), and only GET and HEAD are answered.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import socket
import ssl
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from gpudc.boot import tokens
from gpudc.plan.types import Plan

log = logging.getLogger("gpudc.boot.seed")

#: The files of a node's seed folder that may be served (vendor-data is empty when not rendered).
SEED_FILES = ("node.ipxe", "user-data", "meta-data", "vendor-data")
#: Public files directly in pxe/ (never pxe/nodes/).
PUBLIC_PXE_SUFFIXES = (".ipxe", ".preseed.cfg")
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_TIMEOUT_S = 10.0
_TEXT_SUFFIXES = ("", ".ipxe", ".cfg")


def _content_type(path: Path) -> str:
    return "text/plain" if path.suffix in _TEXT_SUFFIXES else "application/octet-stream"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A server certificate (chain) and its key, e.g. issued by the site's CA."""

    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


@dataclass(frozen=True, slots=True)
class SeedNode:
    name: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address


def seed_index(plan: Plan) -> dict[str, SeedNode]:
    """token -> (node, planned in-band address), from the plan and the site's token key."""
    found = tokens.node_tokens(plan)
    return {found[n.name]: SeedNode(n.name, ipaddress.ip_address(n.addresses["inband"])) for n in plan.nodes}


def _public_dirs(plan: Plan) -> tuple[str, ...]:
    """Tree folders whose files are public: iPXE binaries and each pool's OS boot path."""
    dirs = {"ipxe"}
    for node in plan.nodes:
        path = node.boot.path.strip("/")
        if path and ".." not in Path(path).parts:
            dirs.add(path)
    return tuple(sorted(dirs))


def _client_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class SeedServer(ThreadingHTTPServer):
    """The HTTP(S) server; `shutdown()` stops serve_forever (from another thread) and closes it."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], root: Path, plan: Plan, tls: ssl.SSLContext | None = None,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, request_timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.root = root.resolve()
        self.site = plan.site.name
        self.prefix = tokens.site_path(self.site)
        self.index = seed_index(plan)
        self.public_dirs = _public_dirs(plan)
        self.tls = tls
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._serving = False
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, SeedHandler)

    @property
    def url(self) -> str:
        """The base URL this server answers at (with the site prefix), e.g. for seed_url()."""
        host, port = str(self.server_address[0]), self.server_address[1]
        scheme = "https" if self.tls else "http"
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{port}{self.prefix}"

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:  # handshake later, in the worker, under the timeout
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("refused %s: %d connections already open", client_address[0], self.max_connections)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        # the exception's type only: its text could quote a request line
        log.warning("connection from %s ended: %s", client_address[0], type(exc).__name__)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._serving = True
        try:
            super().serve_forever(poll_interval)
        finally:
            self._serving = False

    def shutdown(self) -> None:
        if self._serving:
            super().shutdown()
        self.server_close()


class SeedHandler(BaseHTTPRequestHandler):
    server: SeedServer
    server_version = "gpudc-seed"
    sys_version = ""

    def setup(self) -> None:
        self.request.settimeout(self.server.request_timeout)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    # ---------------------------------------------------------------- logging (redacted)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.client_address[0], tokens.redact(format % args))

    def log_error(self, format: str, *args: Any) -> None:
        log.warning("%s %s", self.client_address[0], tokens.redact(format % args))

    # ---------------------------------------------------------------- requests

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        prefix = self.server.prefix
        if path == prefix or path.startswith(prefix + "/"):
            path = path[len(prefix):]
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") or "\\" in p or "\0" in p for p in parts):
            self._refuse(HTTPStatus.NOT_FOUND)
            return
        if len(parts) >= 2 and parts[0] == "seed":
            self._seed(parts, body)
            return
        target = self._public(parts)
        if target is None:
            self._refuse(HTTPStatus.NOT_FOUND)
            return
        self._send_file(target, body, cache=True)

    def _public(self, parts: list[str]) -> Path | None:
        root = self.server.root
        rel = "/".join(parts)
        if len(parts) == 2 and parts[0] == "pxe" and parts[1].endswith(PUBLIC_PXE_SUFFIXES):
            candidate = root / "pxe" / parts[1]
        elif any(rel.startswith(d + "/") for d in self.server.public_dirs):
            candidate = root / rel
        else:
            return None
        try:
            resolved = candidate.resolve(strict=True)
        except OSError:
            return None
        if not resolved.is_relative_to(root) or not resolved.is_file():
            return None
        if not resolved.stat().st_mode & 0o004:  # a file kept from others (0600) is never public
            return None
        return resolved

    def _seed(self, parts: list[str], body: bool) -> None:
        token = parts[1]
        node = self.server.index.get(token) if tokens.looks_like_token(token) else None
        if node is None:
            log.warning("%s: unknown seed token %s: 404", self.client_address[0], tokens.short(token))
            self._refuse(HTTPStatus.NOT_FOUND, quiet=True)
            return
        client = _client_ip(self.client_address[0])
        if client != node.address:
            log.warning("%s: seed of %s (token %s) asked from outside its address %s: 403",
                        self.client_address[0], node.name, tokens.short(token), node.address)
            self._refuse(HTTPStatus.FORBIDDEN, quiet=True)
            return
        if len(parts) != 3 or parts[2] not in SEED_FILES:
            self._refuse(HTTPStatus.NOT_FOUND)
            return
        path = self.server.root / "pxe" / "nodes" / node.name / parts[2]
        if not path.is_file():
            if parts[2] == "vendor-data":  # NoCloud asks for it; none rendered means none
                self._send_bytes(b"", "text/plain", body)
                return
            self._refuse(HTTPStatus.NOT_FOUND)
            return
        log.info("%s: serving %s of %s", self.client_address[0], parts[2], node.name)
        self._send_file(path, body, cache=False)

    # ---------------------------------------------------------------- responses

    def _refuse(self, status: HTTPStatus, quiet: bool = False) -> None:
        data = f"{status.value} {status.phrase}\n".encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        if not quiet:
            self.log_request(status.value)

    def _send_bytes(self, data: bytes, content_type: str, body: bool) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _send_file(self, path: Path, body: bool, cache: bool) -> None:
        try:
            fh = path.open("rb")
        except OSError:
            self._refuse(HTTPStatus.NOT_FOUND)
            return
        with fh:
            size = path.stat().st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", _content_type(path))
            self.send_header("Content-Length", str(size))
            self.send_header("Cache-Control", "max-age=60" if cache else "no-store")
            self.end_headers()
            if body:
                shutil.copyfileobj(fh, self.wfile, 1 << 16)


def make_server(render_dir: Path | str, plan: Plan, host: str = "0.0.0.0", port: int = 80,
                tls: TlsFiles | ssl.SSLContext | None = None, *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                request_timeout: float = DEFAULT_TIMEOUT_S) -> SeedServer:
    """A bound, not yet serving, seed server (call serve_forever; port 0 picks a free port)."""
    root = Path(render_dir)
    if not (root / "pxe").is_dir():
        raise FileNotFoundError(f"{root}: no pxe/ folder (render the site first: gpudc render)")
    context = tls.context() if isinstance(tls, TlsFiles) else tls
    return SeedServer((host, port), root, plan, context, max_connections, request_timeout)


def serve(render_dir: Path | str, plan: Plan, host: str = "127.0.0.1", port: int = 0,
          tls: TlsFiles | ssl.SSLContext | None = None, *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
          request_timeout: float = DEFAULT_TIMEOUT_S) -> SeedServer:
    """A seed server serving in a daemon thread; `.url` is its base URL, `.shutdown()` stops it."""
    server = make_server(render_dir, plan, host, port, tls, max_connections=max_connections,
                         request_timeout=request_timeout)
    thread = threading.Thread(target=server.serve_forever, name="gpudc-seed-server", daemon=True)
    server._serving = True  # shutdown() before the thread has started must still wait for it
    thread.start()
    return server
