"""Run the real `sushy-emulator` (sushy-tools, fake driver) with BIOS storage.

sushy-tools' fake driver implements power, boot and NICs but not BIOS (its base class
raises NotSupportedError; only the libvirt driver stores BIOS, and libvirt is not here).
This launcher gives the fake driver BIOS attributes the way the libvirt driver keeps them
(current attributes, defaults, reset), stored in the fake driver's own persistent system
state, then runs the emulator's own `main()` unchanged: its Flask routes, its htpasswd auth
middleware, its power delay. Usage: python sushy_bios_emulator.py --config FILE --fake
-i 127.0.0.1 -p PORT.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

from sushy_tools.emulator import main as emulator
from sushy_tools.emulator.resources.systems import fakedriver

#: The libvirt driver's default BIOS attributes (sushy_tools libvirtdriver.DEFAULT_BIOS_ATTRIBUTES).
DEFAULT_BIOS = {"BootMode": "Uefi", "EmbeddedSata": "Raid", "NicBoot1": "NetworkBoot", "ProcTurboMode": "Enabled"}


def _system(driver: Any, identity: str) -> dict[str, Any]:
    system: dict[str, Any] = driver._get(identity)
    return system


def get_bios(self: Any, identity: str) -> dict[str, Any]:
    system = _system(self, identity)
    if "bios" not in system:
        self._update(system, bios=copy.deepcopy(system.get("bios_defaults") or DEFAULT_BIOS))
    return dict(_system(self, identity)["bios"])


def set_bios(self: Any, identity: str, attributes: dict[str, Any]) -> None:
    bios = get_bios(self, identity)
    bios.update(attributes or {})
    self._update(identity, bios=bios)


def reset_bios(self: Any, identity: str) -> None:
    system = _system(self, identity)
    self._update(system, bios=copy.deepcopy(system.get("bios_defaults") or DEFAULT_BIOS))


def get_versions(self: Any, identity: str) -> dict[str, Any]:
    return {"BiosVersion": "1.0.0"}


fakedriver.FakeDriver.get_bios = get_bios  # type: ignore[method-assign]
fakedriver.FakeDriver.set_bios = set_bios  # type: ignore[method-assign]
fakedriver.FakeDriver.reset_bios = reset_bios  # type: ignore[method-assign]
fakedriver.FakeDriver.get_versions = get_versions  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(emulator.main())
