"""A dual-homed node's in-band bond: the probe's reader on real /proc/net/bonding captures, and the bond
check against the plan's expectation (802.3ad, every member in the active aggregator, LACP partner = the
leaf pair's EVPN multihoming system MAC)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gpudc.plan import load_plan
from gpudc.plan.types import Expectation
from gpudc.validate import probe_script
from gpudc.validate.checks import evaluate
from gpudc.validate.policy import Policy

from .conftest import FIXTURES, healthy_facts

BONDING = FIXTURES / "bonding"
PAIR_MAC = "02:67:64:e5:00:01"


def capture(name: str) -> dict[str, Any]:
    return probe_script.parse_bonding((BONDING / name).read_text())


def facts_with(bonds: dict[str, Any], driver: str = "loaded") -> dict[str, Any]:
    facts = healthy_facts(gb200=True)
    facts["bonding"] = {"driver": driver, "bonds": bonds}
    return facts


@pytest.fixture
def dual(gb200: Expectation) -> Expectation:
    return replace(gb200, bond_members=2, bond_partner_mac=PAIR_MAC)


def bond_findings(facts: dict[str, Any], expected: Expectation, policy: Policy) -> tuple[str, list[Any]]:
    verdict = evaluate("gb200-01", facts, expected, policy)
    return verdict.verdict, [f for f in verdict.findings if f.check == "bond"]


def test_the_reader_takes_the_real_captures_apart() -> None:
    healthy = capture("healthy-2x100g.txt")
    assert healthy["mode"] == "IEEE 802.3ad Dynamic link aggregation" and healthy["mii_status"] == "up"
    assert (healthy["aggregator_id"], healthy["partner_mac"], healthy["lacp_rate"]) == (5, "3c:c7:86:87:8a:21", "slow")
    assert [(m["name"], m["aggregator_id"], m["actor_state"], m["partner_state"], m["partner_mac"], m["speed_mbps"])
            for m in healthy["members"]] == [
        ("enp1s0f0", 5, 61, 61, "3c:c7:86:87:8a:21", 100000), ("enp1s0f1", 5, 61, 61, "3c:c7:86:87:8a:21", 100000)]
    churned = capture("member-churned-25g.txt")
    assert [(m["name"], m["link_failures"], m["actor_state"], m["partner_state"]) for m in churned["members"]] == [
        ("eth0", 0, 63, 63), ("eth1", 17, 15, 31)]
    lonely = capture("no-lacp-partner-cx5.txt")  # mail quoting removed; the aggregator lines kept their spaces
    assert lonely["aggregator_id"] == 2 and lonely["partner_mac"] == "00:00:00:00:00:00"
    assert [m["aggregator_id"] for m in lonely["members"]] == [1, 2]


def test_a_healthy_bond_to_the_planned_pair_passes(dual: Expectation, policy: Policy) -> None:
    bond = capture("healthy-2x100g.txt")
    verdict, findings = bond_findings(facts_with({"bond0": bond}), replace(dual, bond_partner_mac="3c:c7:86:87:8a:21"),
                                      policy)
    assert (verdict, findings) == ("pass", [])


def test_a_bond_to_another_pair_names_the_partner_it_sees(dual: Expectation, policy: Policy) -> None:
    verdict, (finding,) = bond_findings(facts_with({"bond0": capture("healthy-2x100g.txt")}), dual, policy)
    assert verdict == "warn" and finding.action == "none" and finding.severity == "warn"
    assert finding.message == f"LACP partner of bond0 is not the leaf pair's ES system MAC {PAIR_MAC}"
    assert "enp1s0f0: 3c:c7:86:87:8a:21" in finding.evidence and "bond0: 3c:c7:86:87:8a:21" in finding.evidence


def test_a_churning_member_is_down(dual: Expectation, policy: Policy) -> None:
    bond = capture("member-churned-25g.txt")
    _, findings = bond_findings(facts_with({"bond0": bond}), replace(dual, bond_partner_mac="00:00:5e:00:01:01"),
                                policy)
    (finding,) = findings
    assert finding.message == "1 of 2 bond0 members carry traffic"
    assert finding.evidence == "eth1: LACP actor state 0xf (not in sync, collecting and distributing)"


def test_a_bond_without_a_partner_has_no_working_member(dual: Expectation, policy: Policy) -> None:
    _, findings = bond_findings(facts_with({"bond0": capture("no-lacp-partner-cx5.txt")}), dual, policy)
    (finding,) = findings  # the all-zero partner is no partner: not reported as a wrong one
    assert finding.message == "0 of 2 bond0 members carry traffic"
    assert "enp145s0f0: aggregator 1, not the active 2" in finding.evidence
    assert "enp145s0f1: LACP actor state 0x4d" in finding.evidence


def test_no_bond_where_the_driver_runs_is_missing_and_no_driver_is_only_unverified(
        dual: Expectation, policy: Policy) -> None:
    verdict, (finding,) = bond_findings(facts_with({}), dual, policy)
    assert (verdict, finding.severity, finding.message) == ("warn", "warn", "bond0 missing on a dual-homed node")
    verdict, (finding,) = bond_findings(facts_with({}, driver="absent"), dual, policy)
    assert (verdict, finding.severity) == ("pass", "info")  # a container on a kernel without bonding (the lab)
    rr = {**capture("healthy-2x100g.txt"), "mode": "load balancing (round-robin)"}
    _, (finding,) = bond_findings(facts_with({"bond0": rr}), dual, policy)
    assert finding.message == "bond0 is load balancing (round-robin), not 802.3ad"


def test_single_homed_nodes_and_older_probes_are_not_judged(gb200: Expectation, dual: Expectation,
                                                             policy: Policy) -> None:
    assert bond_findings(facts_with({}), gb200, policy) == ("pass", [])
    assert bond_findings(healthy_facts(gb200=True), dual, policy) == ("pass", [])  # no "bonding" fact


def test_the_plan_expects_each_dual_homed_node_to_see_its_pairs_system_mac() -> None:
    plan = load_plan("osaka-sakai")
    switches = {s.name: s for s in plan.switches}
    for node in plan.nodes:
        leaf = next(n.switch for n in node.nics if n.network == "inband" and n.switch)
        assert node.expected.bond_members == 2
        assert node.expected.bond_partner_mac == switches[str(leaf)].es_sys_mac
    h200 = load_plan("starter").nodes[0]
    assert (h200.expected.bond_members, h200.expected.bond_partner_mac) == (0, None)


def test_the_probe_reports_this_machines_bonding() -> None:
    facts: dict[str, Any] = {}
    probe_script.collect_bonding(facts)
    assert facts["bonding"]["driver"] in ("loaded", "module", "absent")
    assert isinstance(facts["bonding"]["bonds"], dict)
