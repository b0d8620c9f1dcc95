"""`gpudc boot serve`: the seed server over a rendered tree."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gpudc.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = subparsers.add_parser("boot", help="network boot: serve the rendered PXE tree and per-node seeds")
    sub = p.add_subparsers(dest="boot_command", metavar="ACTION")
    sub.required = True
    s = sub.add_parser(
        "serve", help="serve a rendered tree over HTTP(S); each node's seed only to that node's address",
        description="Public: pxe/*.ipxe, pxe/*.preseed.cfg, ipxe/ and the pools' OS folders. "
                    "/seed/<token>/{node.ipxe,user-data,meta-data,vendor-data}: only to the node's planned "
                    "in-band address (unknown token 404, other address 403). Paths may carry /gpudc/<site>.",
    )
    s.add_argument("--stack", required=True, help="a stack name in stacks/ or a path to a stack file")
    s.add_argument("--dir", required=True, type=Path, help="the tree `gpudc render --out` wrote")
    s.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all; use the boot server's)")
    s.add_argument("--port", type=int, default=None, help="port (default: 80, or 443 with --tls-cert)")
    s.add_argument("--tls-cert", type=Path, metavar="FILE", help="server certificate (chain), e.g. from the site's CA")
    s.add_argument("--tls-key", type=Path, metavar="FILE", help="the certificate's private key")
    s.add_argument("--site-ca", action="store_true",
                   help="HTTPS with a certificate for --host issued by the site's boot CA (`gpudc boot ca`)")
    s.add_argument("--max-connections", type=int, default=64, help="connections served at once (default 64)")
    s.add_argument("--timeout", type=float, default=10.0, help="per-connection timeout in seconds (default 10)")
    s.set_defaults(handler=_serve)
    c = sub.add_parser(
        "ca", help="the site's boot CA certificate (PEM on stdout): what installers and nodes trust for HTTPS seeds",
        description="Made on first use in the site secret dir (key 0600). Put it into the installer image or "
                    "the node's trust store so seeds can be fetched over HTTPS (`gpudc boot serve --site-ca`).")
    c.add_argument("--stack", required=True, help="a stack name in stacks/ or a path to a stack file")
    c.set_defaults(handler=_ca)


def _ca(args: argparse.Namespace) -> int:
    from gpudc.boot.tls import site_ca
    from gpudc.plan import load_plan

    _, cert = site_ca(load_plan(args.stack).site.name)
    sys.stdout.write(cert.read_text())
    sys.stderr.write(f"gpudc: {cert}\n")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from gpudc.boot.seed_server import TlsFiles, make_server
    from gpudc.plan import load_plan

    if (args.tls_cert is None) != (args.tls_key is None):
        raise InputError("--tls-cert and --tls-key go together")
    if args.site_ca and args.tls_cert is not None:
        raise InputError("--site-ca issues the certificate itself: give it or --tls-cert/--tls-key, not both")
    if args.max_connections < 1 or args.timeout <= 0:
        raise InputError("--max-connections and --timeout must be positive")
    tls = None
    if args.tls_cert is not None:
        for f in (args.tls_cert, args.tls_key):
            if not f.is_file():
                raise InputError(f"{f}: no such file")
        try:
            tls = TlsFiles(args.tls_cert, args.tls_key).context()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError; its text names no key material
            raise InputError(f"--tls-cert/--tls-key: cannot load: {type(exc).__name__}") from None
    plan = load_plan(args.stack)
    if args.site_ca:
        from gpudc.boot.tls import server_files

        if args.host in ("0.0.0.0", "::", ""):
            raise InputError("--site-ca: give --host, the boot server's address (the certificate names it)")
        try:
            cert, key = server_files(plan.site.name, [args.host])
        except ValueError:
            raise InputError(f"--host {args.host}: not an IP address") from None
        tls = TlsFiles(cert, key).context()
    port = args.port if args.port is not None else (443 if tls else 80)
    if not (args.dir / "pxe" / "nodes").is_dir():
        raise InputError(f"--dir {args.dir}: no pxe/nodes/ (render the site first: gpudc render --out)")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        server = make_server(args.dir, plan, args.host, port, tls, max_connections=args.max_connections,
                             request_timeout=args.timeout)
    except OSError as exc:
        raise InputError(f"cannot listen on {args.host}:{port}: {exc.strerror or exc}") from None
    sys.stderr.write(f"gpudc: serving {args.dir} for site {plan.site.name} ({len(plan.nodes)} nodes) at "
                     f"{server.url}/ (Ctrl-C stops)\n")
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
