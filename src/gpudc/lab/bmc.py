"""Simulated BMCs: sushy-tools' Redfish emulator with a systems driver that controls lab hosts.

One process (`python -m gpudc.lab.bmc RUN_DIR`) serves every lab host's BMC: one HTTP listener
per host on the host's planned out-of-band address (added to the lab bridge), each showing only
its own ComputerSystem, like a real BMC. The emulator is sushy-tools' own Flask app (same JSON
shapes, same HTTP basic auth against a bcrypt htpasswd file); only its systems driver is ours:

- PowerState reads whether the host's container runs.
- Reset On / ForceOn / ForceOff / GracefulShutdown / ForceRestart / GracefulRestart /
  PushPowerButton really start and stop the host's systemd-nspawn container.
- A boot override to Pxe followed by a power on or restart reimages the host (fresh overlay,
  the same pre-seeded host key, healthy GPUs except faults kept as hardware faults), then the
  override falls back to Hdd: the emulator's template always reads "Continuous", but the lab
  treats every Pxe override as one-time, as a node that PXE-installs itself would.
"""

from __future__ import annotations

import logging
import sys
import threading
import uuid as uuidlib
from pathlib import Path
from typing import Any

ENV_NODE = "gpudc.lab.node"
POWER_ON = ("On", "ForceOn")
POWER_OFF = ("ForceOff", "GracefulShutdown")
RESTART = ("ForceRestart", "GracefulRestart", "PowerCycle")
RESET_TYPES = (*POWER_ON, *POWER_OFF, *RESTART, "PushPowerButton")


def system_uuid(node: str) -> str:
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{node}.bmc.gpudc-lab"))


def make_driver(nodes: list[str]) -> Any:
    """The sushy-tools systems driver class bound to this lab's nodes."""
    import flask
    from sushy_tools import error
    from sushy_tools.emulator.resources.systems.base import AbstractSystemsDriver

    from gpudc.lab import api

    by_uuid = {system_uuid(n): n for n in nodes}
    node_locks = {n: threading.Lock() for n in nodes}

    class LabSystemsDriver(AbstractSystemsDriver):  # type: ignore[misc,unused-ignore]
        """Systems are lab hosts; each listener sees only its own node."""

        def __init__(self) -> None:
            super().__init__()

        @property
        def driver(self) -> str:
            return "<gpudc-lab>"

        def _visible(self) -> list[str]:
            if flask.has_request_context():
                node = flask.request.environ.get(ENV_NODE)
                return [node] if node else []
            return list(nodes)

        def _node(self, identity: str) -> str:
            node = by_uuid.get(identity, identity)
            if node not in self._visible():
                raise error.NotFound(f"System {identity} was not found")
            return node

        @property
        def systems(self) -> list[str]:
            return self._visible()

        def uuid(self, identity: str) -> str:
            return system_uuid(self._node(identity))

        def name(self, identity: str) -> str:
            return self._node(identity)

        def get_power_state(self, identity: str) -> str:
            return api.power_state(self._node(identity))

        def set_power_state(self, identity: str, state: str) -> None:
            node = self._node(identity)
            if state not in RESET_TYPES:
                raise error.NotSupportedError(f"Power state {state} is not supported")
            with node_locks[node]:
                api.power(node, state)

        def get_boot_device(self, identity: str) -> str:
            return api.boot_override(self._node(identity))

        def set_boot_device(self, identity: str, boot_source: str) -> None:
            if boot_source not in ("Pxe", "Hdd"):
                raise error.BadRequest(f"Boot source {boot_source} is not supported by this BMC")
            api.set_boot_override(self._node(identity), boot_source)

        def get_boot_mode(self, identity: str) -> str:
            self._node(identity)
            return "UEFI"

        def set_boot_mode(self, identity: str, boot_mode: str) -> None:
            self._node(identity)
            if boot_mode != "UEFI":
                raise error.BadRequest("This BMC boots UEFI only")

        def get_secure_boot(self, identity: str) -> bool:
            self._node(identity)
            return False

        def get_total_memory(self, identity: str) -> int:
            self._node(identity)
            return 2048

        def get_total_cpus(self, identity: str) -> int:
            self._node(identity)
            return 224

        def get_nics(self, identity: str) -> list[dict[str, str]]:
            self._node(identity)
            return []

        def get_boot_image(self, identity: str, device: str) -> tuple[None, bool, bool]:
            self._node(identity)
            return None, False, False

    return LabSystemsDriver


class _NodeEnv:
    """WSGI middleware: tags requests on one listener with the node whose BMC it is."""

    def __init__(self, app: Any, node: str) -> None:
        self.app = app
        self.node = node

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        environ[ENV_NODE] = self.node
        return self.app(environ, start_response)


def build_app(nodes: list[str], auth_file: Path) -> Any:
    """sushy-tools' emulator app, configured for the lab, with our systems driver."""
    from sushy_tools.emulator import main as emulator

    app = emulator.app
    app.configure(extra_config={"SUSHY_EMULATOR_AUTH_FILE": str(auth_file), "SUSHY_EMULATOR_FEATURE_SET": "full"})
    driver = make_driver(nodes)()

    class LabApplication(type(app)):  # type: ignore[misc]
        @property
        def systems(self) -> Any:
            return driver

    app.__class__ = LabApplication
    return app


def serve(run_dir: Path) -> None:
    import os

    from werkzeug.serving import make_server

    os.environ["GPUDC_LAB_RUN_DIR"] = str(run_dir)
    from gpudc.lab import api
    from gpudc.lab import state as st

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    lab = st.load()
    if lab is None:
        raise SystemExit("gpudc.lab.bmc: no lab state")
    nodes = [h["name"] for h in lab["hosts"]]
    app = build_app(nodes, run_dir / "bmc" / "htpasswd")
    servers = []
    for rec in lab["hosts"]:
        server = make_server(rec["bmc_address"], api.BMC_PORT, _NodeEnv(app.wsgi_app, rec["name"]), threaded=True)
        servers.append(server)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    stop = threading.Event()

    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    for server in servers:
        server.shutdown()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
