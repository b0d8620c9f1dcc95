from __future__ import annotations

import calendar
import time

from gpudc.validate import probe_script as ps
from gpudc.validate.checks import evaluate, reported_xid_ids

from .conftest import FakeHistory, healthy_facts

LINE = "NVRM: Xid (PCI:0000:28:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus."


def test_three_log_formats_are_read_and_deduped() -> None:
    boot = 1_800_000_000.0
    t = boot + 1234.5
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".500000+00:00"
    journal = f"{t:.6f} node7 kernel: {LINE}\n"
    kern = f"{iso} node7 kernel: [ 1234.500000] {LINE}\n"
    dmesg = f"[ 1234.500001] {LINE}\n"
    events = (
        ps.parse_xid_lines(journal, "journal", boot, t + 10)
        + ps.parse_xid_lines(kern, "kern.log", boot, t + 10)
        + ps.parse_xid_lines(dmesg, "dmesg", boot, t + 10)
    )
    assert len(events) == 3 and {e["xid"] for e in events} == {79}
    merged = ps.merge_xids(events)
    assert len(merged) == 1
    assert sorted(merged[0]["sources"]) == ["dmesg", "journal", "kern.log"]
    assert merged[0]["dev"] == "0000:28:00" and abs(merged[0]["time"] - t) < 0.01
    # the same event read again gives the same id (history dedupe relies on it)
    assert ps.merge_xids(ps.parse_xid_lines(journal, "journal", boot, t + 99))[0]["id"] == merged[0]["id"]


def test_traditional_syslog_timestamp() -> None:
    now = calendar.timegm((2026, 11, 28, 12, 0, 0, 0, 0, 0))
    ev = ps.parse_xid_lines(f"Nov 28 03:11:02 node7 kernel: [ 8550.991473] {LINE}", "kern.log", None, now)
    assert ev[0]["xid"] == 79 and ev[0]["time"] is not None


def test_distinct_events_are_kept() -> None:
    lines = f"[ 10.0] {LINE}\n[ 500.0] {LINE}\n[ 20.0] NVRM: Xid (PCI:0000:38:00): 48, pid=1, name=x, DBE\n"
    merged = ps.merge_xids(ps.parse_xid_lines(lines, "dmesg", 1_000.0, 2_000.0))
    assert sorted(e["xid"] for e in merged) == [48, 79, 79]
    assert len({e["id"] for e in merged}) == 3


def _with_xid(facts: dict, code: int, age_s: float, text: str = "GPU has fallen off the bus.") -> dict:
    t = facts["time"] - age_s
    facts["xids"] = ps.merge_xids(
        [{"xid": code, "dev": "0000:28:00", "text": text, "time": t, "source": "journal"}]
    )
    return facts


def test_xid_79_reboots_gpu_mapped_by_bus(policy, h200) -> None:
    v = evaluate("n", _with_xid(healthy_facts(), 79, 60), h200, policy)
    f = next(x for x in v.findings if x.check == "xid:79")
    assert (v.verdict, v.action, f.gpu, f.severity) == ("fail", "reboot", 1, "fail")
    assert "Xid (PCI:0000:28:00): 79" in f.evidence


def test_xid_of_a_gpu_that_fell_off_the_bus_maps_by_pci_order(policy, h200) -> None:
    facts = healthy_facts()
    lost = facts["gpus"][1]
    lost.pop("bdf")  # NVML has no handle, so no bus id, for a lost GPU
    v = evaluate("n", _with_xid(facts, 79, 60), h200, policy)
    assert next(x for x in v.findings if x.check == "xid:79").gpu == 1
    facts["pci_devices"].pop()  # PCI and NVML disagree: the order tells nothing, say nothing
    v = evaluate("n", _with_xid(facts, 79, 60), h200, policy)
    assert next(x for x in v.findings if x.check == "xid:79").gpu is None


def test_xid_outside_the_window_is_ignored(policy, h200) -> None:
    v = evaluate("n", _with_xid(healthy_facts(), 79, 3 * 3600), h200, policy)
    assert v.verdict == "pass" and not [f for f in v.findings if f.check.startswith("xid")]


def test_seen_xid_and_xid_before_boot_are_info(policy, h200) -> None:
    # an application-level XID already reported is not reported again
    facts = _with_xid(healthy_facts(), 94, 60)
    seen = set(reported_xid_ids(facts, policy))
    assert len(seen) == 1
    v = evaluate("n", facts, h200, policy, FakeHistory(seen=seen))
    assert (
        v.verdict == "pass"
        and v.findings[0].severity == "info"
        and "already reported" in v.findings[0].message
    )
    # one that asks for a reboot stays in force until the node has rebooted
    facts = _with_xid(healthy_facts(), 79, 60)
    v = evaluate("n", facts, h200, policy, FakeHistory(seen=set(reported_xid_ids(facts, policy))))
    assert (v.verdict, v.action) == ("fail", "reboot")
    assert "already reported; no reboot since" in v.findings[0].message
    facts = _with_xid(healthy_facts(), 79, 60)
    facts["boot_time"] = facts["time"] - 10
    v = evaluate("n", facts, h200, policy)
    assert v.verdict == "pass" and "before the last boot" in v.findings[0].message


def test_escalation_to_rma_after_two_reboots(policy, h200) -> None:
    facts = _with_xid(healthy_facts(), 79, 60)
    assert evaluate("n", facts, h200, policy, FakeHistory(reboots={"xid:79": 1})).action == "reboot"
    v = evaluate("n", facts, h200, policy, FakeHistory(reboots={"xid:79": 2}))
    assert v.action == "rma" and "escalated to RMA" in v.findings[0].message
    # another cause's reboots do not count
    assert evaluate("n", facts, h200, policy, FakeHistory(reboots={"gpu_count": 5})).action == "reboot"


def test_xid_catalog_severities(policy, h200) -> None:
    for code, verdict, action in (
        (48, "fail", "reset_gpu"),
        (94, "warn", "none"),
        (63, "warn", "none"),
        (74, "fail", "reset_gpu"),
    ):
        v = evaluate("n", _with_xid(healthy_facts(), code, 60, text="x"), h200, policy)
        assert (v.verdict, v.action) == (verdict, action), code


def test_xid_154_follows_the_recovery_text(policy, h200) -> None:
    text = "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)"
    v = evaluate("n", _with_xid(healthy_facts(), 154, 60, text=text), h200, policy)
    assert (v.verdict, v.action) == ("fail", "reboot")
