"""gpudc upgrade: waves (size, NVL72 domains), the rollout's order, failures, and resuming a killed rollout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gpudc.errors import InputError
from gpudc.plan import load_plan
from gpudc.provision.inventory import build_inventory
from gpudc.reprovision.drain import DrainError
from gpudc.upgrade.rollout import Backends, read_journal, rollout
from gpudc.upgrade.waves import parse_max_unavailable, plan_waves


class FakeDrainer:
    """Records every drain and resume and the most nodes ever drained at once."""

    name = "fake"

    def __init__(self, drained: dict[str, str] | None = None) -> None:
        self.drained: dict[str, str] = dict(drained or {})
        self.log: list[tuple[str, str]] = []
        self.most = len(self.drained)

    def drain(self, node: str, reason: str) -> None:
        self.drained.setdefault(node, reason)
        self.log.append(("drain", node))
        self.most = max(self.most, len(self.drained))

    def wait_drained(self, node: str, timeout: float, say: Callable[[str], None] | None = None) -> str:
        if node not in self.drained:
            raise DrainError(f"{node} not drained")
        return "drained"

    def resume(self, node: str) -> None:
        self.drained.pop(node, None)
        self.log.append(("resume", node))

    def wait_resumed(self, node: str, timeout: float) -> str:
        return "resumed"

    def is_drained(self, node: str) -> bool | None:
        return node in self.drained

    def current_reason(self, node: str) -> str | None:
        return self.drained.get(node)


class Killed(BaseException):
    """The rollout's process dying mid-wave."""


def backends(drainer: FakeDrainer, upgraded: list[str], *, fail: set[str] = frozenset(),  # type: ignore[assignment]
             kill_at: str | None = None) -> Backends:
    def upgrade(nodes: list[str], timeout: float) -> dict[str, str]:
        assert all(n in drainer.drained for n in nodes), "upgrading a node in service"
        if kill_at in nodes:
            raise Killed
        upgraded.extend(nodes)
        return {}

    def validate(nodes: list[str], timeout: float) -> dict[str, tuple[str, str]]:
        return {n: ("fail", "xid 79") if n in fail else ("pass", "") for n in nodes}

    return Backends(drainer=drainer, upgrade=upgrade, validate=validate)


def test_waves_keep_nvl72_trays_apart_and_pools_to_their_share() -> None:
    plan = load_plan("osaka-sakai")
    domain = {n.name: n.nvlink_domain for n in plan.nodes}
    waves = plan_waves(plan.nodes)
    assert sorted(n for w in waves for n in w) == sorted(n.name for n in plan.nodes)
    for wave in waves:
        assert len({domain[n] for n in wave}) == len(wave), "two trays of one NVL72 domain in a wave"
    hgx = load_plan("ishikari")
    pools: dict[str, int] = {}
    for n in hgx.nodes:
        pools[n.pool] = pools.get(n.pool, 0) + 1
    pool_of = {n.name: n.pool for n in hgx.nodes}
    for wave in plan_waves(hgx.nodes):
        assert len({pool_of[n] for n in wave}) == 1
        assert 1 <= len(wave) <= max(1, pools[pool_of[wave[0]]] // 10)
    assert len(plan_waves(hgx.nodes, 0.5)[0]) == pools[sorted(pools)[0]] // 2
    assert parse_max_unavailable("25%") == 0.25 and parse_max_unavailable("3") == 3
    for bad in ("0", "x", "0%", "150%"):
        with pytest.raises(InputError):
            parse_max_unavailable(bad)


def test_inventory_spreads_a_pool_over_upgrade_waves() -> None:
    inv = build_inventory(load_plan("lab"))["all"]["hosts"]
    h200 = [hv["gpudc_upgrade_wave"] for hv in inv.values() if hv["gpudc_pool"] == "h200"]
    assert len(set(h200)) == len(h200) == 2, "an HGX pool upgraded in one wave"


def test_wave_size_one_drains_one_node_at_a_time(tmp_path: Path) -> None:
    plan = load_plan("lab")
    drainer, upgraded = FakeDrainer(), list[str]()
    out = rollout(plan, backends(drainer, upgraded), max_unavailable=1, journal=tmp_path / "j.json")
    assert out.status == "done" and out.exit_code == 0 and out.done == 4
    assert drainer.most == 1 and not drainer.drained
    assert sorted(upgraded) == sorted(n.name for n in plan.nodes)
    assert [a for a, _ in drainer.log] == ["drain", "resume"] * 4


def test_a_failed_wave_stops_the_rollout_and_stays_drained(tmp_path: Path) -> None:
    plan = load_plan("lab")
    drainer, upgraded = FakeDrainer(), list[str]()
    journal = tmp_path / "j.json"
    out = rollout(plan, backends(drainer, upgraded, fail={"gb200-02"}), max_unavailable=1, journal=journal)
    assert out.status == "stopped" and out.exit_code == 1 and out.done == 1
    assert list(drainer.drained) == ["gb200-02"] and "xid 79" in out.failed["gb200-02"]
    assert upgraded == ["gb200-01", "gb200-02"]  # nothing after the failed wave
    # fixed, run again: the failed wave is retried, then the rest
    out = rollout(plan, backends(drainer, upgraded), max_unavailable=1, journal=journal)
    assert out.status == "done" and not drainer.drained and not out.failed
    assert upgraded[2:] == ["gb200-02", "h200-01", "h200-02"]


def test_a_killed_rollout_resumes_at_its_wave(tmp_path: Path) -> None:
    plan = load_plan("lab")
    drainer, upgraded = FakeDrainer(), list[str]()
    journal = tmp_path / "j.json"
    with pytest.raises(Killed):
        rollout(plan, backends(drainer, upgraded, kill_at="h200-01"), max_unavailable=1, journal=journal)
    doc = read_journal(journal)
    assert doc is not None and doc["done"] == 2 and doc["wave"]["step"] == "upgrade"
    assert list(drainer.drained) == ["h200-01"]
    with pytest.raises(InputError, match="unfinished upgrade"):
        rollout(plan, backends(drainer, upgraded), limit="h200-*", journal=journal)
    out = rollout(plan, backends(drainer, upgraded), max_unavailable=1, journal=journal)
    assert out.status == "done" and not drainer.drained and drainer.most == 1
    assert upgraded == ["gb200-01", "gb200-02", "h200-01", "h200-02"]  # done waves are not redone


def test_a_node_drained_by_someone_else_is_upgraded_but_left_drained(tmp_path: Path) -> None:
    plan = load_plan("lab")
    drainer, upgraded = FakeDrainer({"h200-02": "gpudc-probe XID 79"}), list[str]()
    out = rollout(plan, backends(drainer, upgraded), limit="h200-*", max_unavailable=1, journal=tmp_path / "j")
    assert out.status == "done" and out.kept_drained == ["h200-02"]
    assert drainer.drained == {"h200-02": "gpudc-probe XID 79"} and upgraded == ["h200-01", "h200-02"]
