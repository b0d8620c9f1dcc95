"""BmcClient and the BmcSettings provider against a real sushy-emulator on 127.0.0.1."""

from __future__ import annotations

import base64
import os
import signal
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import dill
import pytest

from gpudc.infra.bmc import BmcSettingsProvider, check_inputs, compute_diff
from gpudc.infra.mocks import run_program, stack_file_config
from gpudc.infra.redfish import BmcAuthError, BmcClient, BmcError, BmcNotSupported, BmcUnreachable

ROOT = Path(__file__).resolve().parents[2]
USER = "gpudc"  # as the emulator fixture (conftest.py) sets up
PASSWORD = "Pw-For-Emulator-7f3a"
Emulator = Any  # conftest.Emulator: url, pid, log, user, password, system(group)


def client(emulator: Emulator, group: str, password: str = PASSWORD, **kw: Any) -> BmcClient:
    return BmcClient(emulator.url, USER, password, system_id=emulator.system(group), **kw)


def props(emulator: Emulator, group: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "node": f"node-{group}",
        "url": emulator.url,
        "username": USER,
        "password": PASSWORD,
        "system_id": emulator.system(group),
        "timeout": 5,
        "retries": 1,
        "bios": {"SriovEnable": "Enabled", "AboveFourGDecoding": "Enabled", "NumaNodesPerSocket": "1"},
        "boot_override": {"target": "Pxe", "enabled": "Once"},
    }
    base.update(over)
    return base


def assert_no_password(exc: BaseException, password: str = PASSWORD) -> None:
    text = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc.args)
    assert password not in text


# -- the client -----------------------------------------------------------------------------


def test_fixture_credentials(emulator: Emulator) -> None:
    assert (emulator.user, emulator.password) == (USER, PASSWORD)


def test_client_reads_and_writes(emulator: Emulator) -> None:
    with client(emulator, "client") as bmc:
        assert bmc.power_state() == "On"
        bios = bmc.get_bios()
        assert bios["SriovEnable"] == "Disabled"
        bmc.set_bios({"SriovEnable": "Enabled"})
        assert bmc.get_bios()["SriovEnable"] == "Enabled"
        assert bmc.bios_pending() == {}
        bmc.set_boot_override("Pxe", "Once", "UEFI")
        override = bmc.boot_override()
        assert override["target"] == "Pxe" and override["mode"] == "UEFI"
        bmc.clear_boot_override()
        assert bmc.boot_override()["target"] == "None"
        with pytest.raises(BmcError, match="unknown boot target"):
            bmc.set_boot_override("Floppy-ish")
        with pytest.raises(BmcError, match="unknown reset type"):
            bmc.reset("Explode")


def test_client_reports_what_the_bmc_lacks(emulator: Emulator) -> None:
    # sushy-emulator has no PowerRestorePolicy, no Manager NetworkProtocol and no EventService.
    with client(emulator, "client") as bmc:
        for call in (bmc.power_restore_policy, bmc.ntp_servers, bmc.syslog_servers):
            with pytest.raises(BmcNotSupported):
                call()
        with pytest.raises(BmcNotSupported, match="PowerRestorePolicy"):
            bmc.set_power_restore_policy("AlwaysOn")
        with pytest.raises(BmcNotSupported, match="NetworkProtocol"):
            bmc.set_ntp_servers(["127.0.0.1"])


def test_reset_and_poll_power(emulator: Emulator) -> None:
    with client(emulator, "power") as bmc:
        bmc.reset("ForceRestart")
        assert bmc.power_state() == "Off"  # the fake driver goes Off at once, On after 1-11 s
        started = time.monotonic()
        assert bmc.wait_power_state("On", timeout=20, interval=0.5) == "On"
        assert time.monotonic() - started < 20
        with pytest.raises(BmcError, match="did not become Off"):
            bmc.wait_power_state("Off", timeout=1, interval=0.5)


def test_wrong_password_is_a_clean_auth_error(emulator: Emulator) -> None:
    wrong = "Wrong-Secret-Pw-91c"
    with pytest.raises(BmcAuthError) as info:
        client(emulator, "client", password=wrong).power_state()
    assert "authentication failed" in str(info.value) and USER in str(info.value)
    assert_no_password(info.value, wrong)
    assert_no_password(info.value, PASSWORD)


def test_hung_bmc_times_out(emulator: Emulator) -> None:
    # SIGSTOP: the kernel still accepts the connection, nothing answers: a read timeout.
    os.kill(emulator.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(BmcUnreachable, match="timed out") as info:
            client(emulator, "client", timeout=1, retries=1).power_state()
        assert time.monotonic() - started < 10
        assert_no_password(info.value)
    finally:
        os.kill(emulator.pid, signal.SIGCONT)


def test_bmc_down_is_unreachable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(BmcUnreachable, match="unreachable") as info:
        BmcClient(f"http://127.0.0.1:{port}", USER, PASSWORD, timeout=1, retries=2).power_state()
    assert time.monotonic() - started < 10
    assert_no_password(info.value)


# -- the provider ---------------------------------------------------------------------------


def test_provider_crud_and_drift(emulator: Emulator) -> None:
    provider = BmcSettingsProvider()
    desired = props(emulator, "provider")
    checked = provider.check({}, desired)
    assert checked.failures == []

    created = provider.create(checked.inputs)
    assert created.id.startswith(emulator.url)
    assert created.outs["power_state"] == "On" and created.outs["drift"] == []
    with client(emulator, "provider") as bmc:
        bios = bmc.get_bios()
        assert {k: bios[k] for k in desired["bios"]} == desired["bios"]
        assert bmc.boot_override()["target"] == "Pxe"

    # Creating again over the same BMC changes nothing (idempotent).
    assert provider.create(checked.inputs).outs["bios"] == created.outs["bios"]
    assert not provider.diff(created.id, created.outs, checked.inputs).changes

    # Change one BIOS attribute: the diff says exactly that, and that it needs a reboot.
    news = {**checked.inputs, "bios": {**desired["bios"], "NumaNodesPerSocket": "4"}}
    diff = compute_diff(created.outs, news)
    assert diff.changed == ["bios"] and diff.bios == ["NumaNodesPerSocket"]
    assert diff.reboot_required and diff.replace == []
    result = provider.diff(created.id, created.outs, news)
    assert result.changes and result.replaces == []
    updated = provider.update(created.id, created.outs, news)
    with client(emulator, "provider") as bmc:
        assert bmc.get_bios()["NumaNodesPerSocket"] == "4"
    assert provider.read(created.id, updated.outs).outs["drift"] == []

    # Out-of-band change: read reports drift, and the next diff wants to put it back.
    with client(emulator, "provider") as bmc:
        bmc.set_bios({"SriovEnable": "Disabled"})
    read = provider.read(created.id, updated.outs)
    assert read.outs["drift"] == ["bios.SriovEnable"]
    assert read.outs["bios"]["SriovEnable"] == "Disabled"
    again = compute_diff(read.outs, news)
    assert again.changed == ["bios"] and again.bios == ["SriovEnable"]
    provider.update(created.id, read.outs, news)
    assert provider.read(created.id, updated.outs).outs["drift"] == []

    # A different BMC address is a replace, not an update.
    assert provider.diff(created.id, updated.outs, {**news, "url": "https://127.0.0.2"}).replaces == ["url"]

    # Delete leaves the hardware safe: the PXE override is cleared, power stays on.
    provider.delete(created.id, updated.outs)
    with client(emulator, "provider") as bmc:
        assert bmc.boot_override()["target"] == "None"
        assert bmc.power_state() == "On"


def test_provider_unsupported_setting_fails_cleanly(emulator: Emulator) -> None:
    provider = BmcSettingsProvider()
    with pytest.raises(BmcNotSupported, match="NetworkProtocol") as info:
        provider.create(props(emulator, "provider", ntp_servers=["127.0.0.1"]))
    assert_no_password(info.value)


def test_provider_wrong_password_and_down(emulator: Emulator) -> None:
    provider = BmcSettingsProvider()
    wrong = "Not-The-Password-55"
    with pytest.raises(BmcAuthError) as info:
        provider.create(props(emulator, "provider", password=wrong))
    assert_no_password(info.value, wrong)
    os.kill(emulator.pid, signal.SIGSTOP)
    try:
        with pytest.raises(BmcUnreachable, match="timed out") as info2:
            provider.read("x", props(emulator, "provider", timeout=1, retries=0))
        assert_no_password(info2.value)
    finally:
        os.kill(emulator.pid, signal.SIGCONT)


def test_check_rejects_bad_inputs_before_any_call() -> None:
    # Port 9 on 127.0.0.1 (discard) is never dialled: check() makes no calls at all.
    bad = {
        "node": "n",
        "url": "ftp://user:pw@127.0.0.1:9",
        "username": "",
        "password": "",
        "power_restore_policy": "Sometimes",
        "boot_override": {"target": "Tape", "enabled": "Twice"},
        "bios": {"Bad Name": "x", "Ok": {"nested": 1}},
        "ntp_servers": ["not a host"],
        "syslog_servers": ["syslog.example:514"],
        "timeout": -1,
    }
    started = time.monotonic()
    failures = {f.property for f in check_inputs(bad)}
    assert time.monotonic() - started < 0.5
    assert failures == {
        "url",
        "username",
        "password",
        "power_restore_policy",
        "boot_override.target",
        "boot_override.enabled",
        "bios.Bad Name",
        "bios.Ok",
        "ntp_servers[0]",
        "syslog_servers[0]",
        "timeout",
    }
    assert all("pw" not in f.reason for f in check_inputs(bad) if f.property == "url")


def test_pickled_provider_from_the_program_creates(emulator: Emulator) -> None:
    """The `__provider` input the engine would get, unpickled, drives the real emulator."""
    config = stack_file_config(ROOT / "stacks" / "Pulumi.lab.yaml", {"gpudc:bmcUser": USER, "gpudc:bmcPassword": "x"})
    run = run_program(config, stack="lab", secret_keys=["gpudc:bmcPassword"])
    bmcs = run.by_type("pulumi-python:dynamic/gpudc:BmcSettings")
    assert len(bmcs) == 4
    serialized = bmcs[0].inputs["__provider"]
    provider = dill.loads(base64.b64decode(serialized))
    assert isinstance(provider, BmcSettingsProvider)
    inputs = {k: v for k, v in bmcs[0].inputs.items() if k != "__provider"}
    assert inputs["bios"]  # the SKU's bios_attributes fact made it through
    # Same inputs, but aimed at the emulator (the lab's BMC addresses are never dialled here).
    inputs.update(url=emulator.url, password=PASSWORD, system_id=emulator.system("pickle"), timeout=5, retries=1)
    checked = provider.check({}, inputs)
    assert checked.failures == []
    created = provider.create(checked.inputs)
    with client(emulator, "pickle") as bmc:
        bios = bmc.get_bios()
    assert {k: bios[k] for k in inputs["bios"]} == {k: str(v) for k, v in inputs["bios"].items()}
    assert created.outs["drift"] == []
