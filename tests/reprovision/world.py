"""The workflow's outside world for unit tests: the real lab plan, real state files and drain file,
and step callables that record what they were asked to do (and when), with scripted results.

`run_in_subprocess.py` imports this to run the workflow in a process the test can kill.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpudc.plan.types import Node
from gpudc.reprovision.drain import Drainer, FileDrainer
from gpudc.reprovision.workflow import Backends, Bmc, StepError
from gpudc.validate.types import Finding, Verdict


@dataclass
class Call:
    node: str
    step: str
    start: float
    end: float = 0.0


class PowerBmc:
    """A BMC with power state and a one-time boot override (what the workflow needs of Redfish)."""

    def __init__(self, world: World, node: str) -> None:
        self.world = world
        self.node = node

    def power_state(self) -> str:
        return self.world.power.get(self.node, "On")

    def reset(self, reset_type: str) -> None:
        self.world.log(self.node, f"reset:{reset_type}")
        if self.world.boot.get(self.node) == "Pxe":
            self.world.reimaged[self.node] = self.world.reimaged.get(self.node, 0) + 1
            self.world.boot[self.node] = "Hdd"
        self.world.power[self.node] = "On"

    def wait_power_state(self, state: str, timeout: float, interval: float = 1.0) -> str:
        return self.world.power.get(self.node, "On")

    def set_boot_override(self, target: str, enabled: str = "Once", mode: str | None = None) -> None:
        self.world.log(self.node, f"boot:{target}:{enabled}")
        self.world.boot[self.node] = target

    def close(self) -> None:
        pass


@dataclass
class World:
    drain_file: Path
    step_seconds: float = 0.0
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    #: step -> exception to raise once (then cleared) or a callable(node) -> None run in the step
    faults: dict[str, Any] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    power: dict[str, str] = field(default_factory=dict)
    boot: dict[str, str] = field(default_factory=dict)
    reimaged: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    bmc_factory: Callable[[Node], Bmc] | None = None

    def log(self, node: str, what: str) -> None:
        with self.lock:
            self.events.append((node, what))

    def _step(self, node: Node, step: str) -> None:
        call = Call(node.name, step, time.monotonic())
        with self.lock:
            self.calls.append(call)
        fault = self.faults.get(step)
        if isinstance(fault, BaseException):
            del self.faults[step]
            raise fault
        if callable(fault):
            fault(node)
        time.sleep(self.step_seconds)
        call.end = time.monotonic()

    def steps_of(self, node: str) -> list[str]:
        return [c.step for c in self.calls if c.node == node]

    def backends(self, drainer: Drainer | None = None) -> Backends:
        def bmc(node: Node) -> Bmc:
            self._step(node, "reimage")
            if self.bmc_factory is not None:
                return self.bmc_factory(node)
            return PowerBmc(self, node.name)

        def wait_ssh(node: Node, timeout: float) -> str:
            self._step(node, "wait_ssh")
            return "ssh ok"

        def provision(node: Node, timeout: float) -> str:
            self._step(node, "provision")
            return "provisioned"

        def validate(node: Node, timeout: float) -> Verdict:
            self._step(node, "validate")
            return self.verdicts.get(node.name) or Verdict(node.name, "pass", "none", [])

        return Backends(
            drainer=drainer or FileDrainer(self.drain_file),
            bmc=bmc, wait_ssh=wait_ssh, provision=provision, validate=validate,
        )


def failing(node: str, action: str, message: str) -> Verdict:
    return Verdict.from_findings(node, [Finding("memory", "fail", message, action, 0)])


def hang(_: Node) -> None:
    time.sleep(3600)


def raise_step_error(message: str, code: int = 1) -> StepError:
    return StepError(message, code)
