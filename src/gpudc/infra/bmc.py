"""`BmcSettings`: a Pulumi dynamic provider that holds one node's BMC to its desired settings.

Managed (each optional; None/empty leaves that part of the BMC alone):
  power_restore_policy   AlwaysOn | AlwaysOff | LastState
  boot_override          {target, enabled (Once|Continuous|Disabled), mode}: applied on create
                         and whenever the desired value changes; a consumed Once override is
                         not drift (the BMC resets it after the boot it was for)
  boot_order             list of boot option references (Boot.BootOrder)
  bios                   attribute -> value (from the SKU's `bios_attributes` catalog fact);
                         a change needs a reboot to take effect
  ntp_servers            Manager NetworkProtocol NTP servers
  syslog_servers         EventService Syslog destinations (udp://host:514)

The provider object carries no state (no client, no credentials): Pulumi pickles it with
dill into the `__provider` input, and every operation opens its own `BmcClient`, closed on
the way out. Credentials come in as inputs (the password a Pulumi secret, kept secret in the
state through `additional_secret_outputs`); every error leaving the provider is scrubbed of
the password.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)
from pulumi.runtime import rpc

from gpudc.infra.redfish import (
    BOOT_MODES,
    BOOT_OVERRIDE_ENABLED,
    BOOT_TARGETS,
    POWER_RESTORE_POLICIES,
    BmcClient,
    BmcError,
    safe_url,
)

T = TypeVar("T")

#: Inputs whose change means a different BMC/system: replace, not update.
REPLACE_KEYS = ("url", "system_id")
#: Inputs that are settings on the BMC (diffed, read back, applied).
SETTING_KEYS = ("power_restore_policy", "boot_override", "boot_order", "bios", "ntp_servers", "syslog_servers")
#: Inputs that change how we talk to the BMC, not what it holds.
CONNECTION_KEYS = ("username", "password", "verify", "timeout", "retries", "node")
#: Settings whose change takes effect only after a reboot.
REBOOT_KEYS = frozenset({"bios", "boot_order"})

_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_SYSLOG = re.compile(r"^(udp|tcp)://(?P<host>[^:/]+)(:(?P<port>\d{1,5}))?$")


def _unwrap(value: Any) -> Any:
    """Plain value of a secret-wrapped RPC value (the engine strips them; mocks may not)."""
    if isinstance(value, dict) and rpc._special_sig_key in value:
        return rpc.unwrap_rpc_secret(value)
    return value


def _plain(props: dict[str, Any]) -> dict[str, Any]:
    return {k: _unwrap(v) for k, v in props.items() if k != "__provider"}


def _known(value: Any) -> bool:
    return value is not rpc.UNKNOWN and value != rpc.UNKNOWN


@dataclass
class BmcDiff:
    """What differs between the state and the desired inputs, for people and for `diff`."""

    changed: list[str] = field(default_factory=list)  # input keys, sorted
    bios: list[str] = field(default_factory=list)  # BIOS attribute names that change
    replace: list[str] = field(default_factory=list)
    reboot_required: bool = False

    def describe(self) -> str:
        parts = [k if k != "bios" else f"bios({', '.join(self.bios)})" for k in self.changed]
        text = ", ".join(parts) or "no changes"
        return text + (" [reboot required]" if self.reboot_required else "")


def _bios_changes(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    old, new = old or {}, new or {}
    return sorted(k for k in new if str(old.get(k)) != str(new[k]) or k not in old)


def compute_diff(olds: dict[str, Any], news: dict[str, Any]) -> BmcDiff:
    """Compare the old outputs (state; after a refresh: what the BMC reports) with new inputs."""
    olds, news = _plain(olds), _plain(news)
    result = BmcDiff()
    for key in (*REPLACE_KEYS, *SETTING_KEYS, *CONNECTION_KEYS):
        new = news.get(key)
        old = olds.get(key)
        if not _known(new):
            result.changed.append(key)
            continue
        if key == "bios":
            attrs = _bios_changes(old, new)
            if attrs:
                result.bios = attrs
                result.changed.append(key)
        elif key == "boot_override":
            if _override_differs(old, new):
                result.changed.append(key)
        elif old != new:
            result.changed.append(key)
    result.changed.sort()
    result.replace = [k for k in REPLACE_KEYS if k in result.changed]
    result.reboot_required = any(k in REBOOT_KEYS for k in result.changed)
    return result


def _override_differs(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    if not new:
        return False  # unmanaged
    if not old:
        return True
    return any(old.get(k) != new.get(k) for k in ("target", "enabled", "mode") if new.get(k) is not None)


def check_inputs(news: dict[str, Any]) -> list[CheckFailure]:
    """Every problem with the inputs, found without talking to the BMC."""
    news = _plain(news)
    failures: list[CheckFailure] = []

    def fail(key: str, reason: str) -> None:
        failures.append(CheckFailure(key, reason))

    def given(key: str) -> Any:
        value = news.get(key)
        return value if _known(value) else None

    url = given("url")
    if "url" not in news or (url is not None and not isinstance(url, str)):
        fail("url", "required: the BMC's Redfish base URL, e.g. https://10.0.1.11")
    elif isinstance(url, str):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            fail("url", f"{safe_url(url)!r} is not an http(s) URL with a host")
        elif parts.username or parts.password:
            fail("url", "credentials must not be part of the URL; use username/password (a secret)")
    if "username" not in news or (given("username") is not None and not str(given("username")).strip()):
        fail("username", "required (gpudc:bmcUser)")
    password = news.get("password")
    if password is None or (_known(password) and not isinstance(password, str)) or password == "":
        fail("password", "required, as a Pulumi secret (pulumi config set --secret gpudc:bmcPassword ...)")
    timeout = given("timeout")
    if timeout is not None and (not isinstance(timeout, int | float) or not 0 < float(timeout) <= 300):
        fail("timeout", "must be a number of seconds in (0, 300]")
    retries = given("retries")
    if retries is not None and (not isinstance(retries, int | float) or not 0 <= int(retries) <= 10):
        fail("retries", "must be an integer in [0, 10]")
    policy = given("power_restore_policy")
    if policy is not None and policy not in POWER_RESTORE_POLICIES:
        fail("power_restore_policy", f"{policy!r} is not one of {', '.join(sorted(POWER_RESTORE_POLICIES))}")
    override = given("boot_override")
    if override is not None:
        if not isinstance(override, dict):
            fail("boot_override", "must be a mapping {target, enabled, mode}")
        else:
            unknown = sorted(set(override) - {"target", "enabled", "mode"})
            if unknown:
                fail("boot_override", f"unknown keys {unknown}")
            if override.get("target") not in BOOT_TARGETS:
                fail("boot_override.target", f"{override.get('target')!r} is not one of {', '.join(sorted(BOOT_TARGETS))}")
            if override.get("enabled", "Once") not in BOOT_OVERRIDE_ENABLED:
                fail("boot_override.enabled", f"{override.get('enabled')!r} is not one of {sorted(BOOT_OVERRIDE_ENABLED)}")
            if override.get("mode") is not None and override["mode"] not in BOOT_MODES:
                fail("boot_override.mode", f"{override['mode']!r} is not one of {sorted(BOOT_MODES)}")
    order = given("boot_order")
    if order is not None and (not isinstance(order, list) or not all(isinstance(x, str) and x for x in order)):
        fail("boot_order", "must be a list of boot option references (strings)")
    bios = given("bios")
    if bios is not None:
        if not isinstance(bios, dict):
            fail("bios", "must be a mapping of BIOS attribute -> value")
        else:
            for key, value in bios.items():
                if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,127}", key):
                    fail(f"bios.{key}", "is not a BIOS attribute name (letters, digits, '_')")
                elif not isinstance(value, str | int | float | bool) or value is None:
                    fail(f"bios.{key}", f"value {value!r} must be a string, number or boolean")
    for key in ("ntp_servers", "syslog_servers"):
        servers = given(key)
        if servers is None:
            continue
        if not isinstance(servers, list):
            fail(key, "must be a list")
            continue
        for i, server in enumerate(servers):
            host = server
            if key == "syslog_servers":
                match = _SYSLOG.match(server) if isinstance(server, str) else None
                if not match or (match.group("port") and not 0 < int(match.group("port")) < 65536):
                    fail(f"{key}[{i}]", f"{server!r} is not udp://host[:port] or tcp://host[:port]")
                    continue
                host = match.group("host")
            if not isinstance(host, str) or not _valid_host(host):
                fail(f"{key}[{i}]", f"{server!r} is not a host name or IP address")
    return failures


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOST.match(host))


def client_for(props: dict[str, Any]) -> BmcClient:
    props = _plain(props)
    return BmcClient(
        str(props["url"]),
        str(props["username"]),
        str(props["password"]),
        timeout=float(props.get("timeout") or 10),
        retries=int(3 if props.get("retries") is None else props["retries"]),
        verify=True if props.get("verify") is None else props["verify"],
        system_id=props.get("system_id"),
    )


@contextmanager
def _session(props: dict[str, Any]) -> Iterator[BmcClient]:
    client = client_for(props)
    try:
        yield client
    finally:
        client.close()


def _scrubbed(props: dict[str, Any], fn: Callable[[], T]) -> T:
    """Run fn; any error leaves as BmcError with the password masked out."""
    password = str(_plain(props).get("password") or "")
    try:
        return fn()
    except BmcError as exc:
        if password and password in str(exc):
            raise type(exc)(str(exc).replace(password, "***")) from None
        raise
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        raise BmcError(text.replace(password, "***") if password else text) from None


def observe(client: BmcClient, desired: dict[str, Any]) -> dict[str, Any]:
    """What the BMC holds for each managed setting (keys of `desired` that are not None)."""
    seen: dict[str, Any] = {}
    if desired.get("power_restore_policy") is not None:
        seen["power_restore_policy"] = client.power_restore_policy()
    if desired.get("boot_override"):
        seen["boot_override"] = client.boot_override()
    if desired.get("boot_order") is not None:
        seen["boot_order"] = client.boot_order()
    if desired.get("bios"):
        current = client.get_bios()
        pending = client.bios_pending()
        # Staged (pending) values count: they are what the BIOS will hold after the reboot.
        seen["bios"] = {k: pending.get(k, current.get(k)) for k in desired["bios"]}
        seen["bios_pending_reboot"] = sorted(k for k in desired["bios"] if k in pending)
    if desired.get("ntp_servers") is not None:
        seen["ntp_servers"] = client.ntp_servers()
    if desired.get("syslog_servers") is not None:
        seen["syslog_servers"] = client.syslog_servers()
    return seen


def _override_applied(desired: dict[str, Any] | None, seen: dict[str, Any] | None) -> bool:
    """Whether the BMC still holds the desired override. A Once override that is no longer set
    was consumed by the boot it was for, which is not drift."""
    if not desired:
        return True
    seen = seen or {}
    if desired.get("enabled", "Once") == "Once":
        return True
    return not _override_differs(seen, desired)


def apply(client: BmcClient, desired: dict[str, Any], keys: list[str]) -> None:
    """Write the given managed settings to the BMC (order: policy, BIOS, boot, services)."""
    if "power_restore_policy" in keys and desired.get("power_restore_policy") is not None:
        client.set_power_restore_policy(desired["power_restore_policy"])
    if "bios" in keys and desired.get("bios"):
        current = client.get_bios()
        missing = sorted(k for k in desired["bios"] if k not in current)
        if missing:
            raise BmcError(f"BMC {client.url}: BIOS has no attribute(s) {', '.join(missing)}")
        changes = {k: v for k, v in desired["bios"].items() if str(current.get(k)) != str(v)}
        client.set_bios(changes)
    if "boot_order" in keys and desired.get("boot_order") is not None:
        client.set_boot_order(list(desired["boot_order"]))
    if "boot_override" in keys and desired.get("boot_override"):
        override = desired["boot_override"]
        client.set_boot_override(override["target"], override.get("enabled") or "Once", override.get("mode"))
    if "ntp_servers" in keys and desired.get("ntp_servers") is not None:
        client.set_ntp_servers(list(desired["ntp_servers"]))
    if "syslog_servers" in keys and desired.get("syslog_servers") is not None:
        client.set_syslog_servers(list(desired["syslog_servers"]))


def _outputs(desired: dict[str, Any], seen: dict[str, Any], power_state: str) -> dict[str, Any]:
    outs = dict(desired)
    pending = seen.get("bios_pending_reboot", [])
    outs["power_state"] = power_state
    outs["bios_pending_reboot"] = pending
    outs["reboot_required"] = bool(pending)
    outs["drift"] = []
    return outs


class BmcSettingsProvider(ResourceProvider):
    """CRUD of one node's BMC settings over Redfish. Stateless: safe to pickle."""

    serialize_as_secret_always = False

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = check_inputs(news)
        inputs = dict(news)
        override = _unwrap(inputs.get("boot_override"))
        if isinstance(override, dict) and _known(override) and "enabled" not in override:
            inputs["boot_override"] = {**override, "enabled": "Once"}
        return CheckResult(inputs, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        result = compute_diff(olds, news)
        stables = [k for k in (*REPLACE_KEYS, *SETTING_KEYS) if k not in result.changed]
        return DiffResult(
            changes=bool(result.changed),
            replaces=result.replace,
            stables=stables,
            delete_before_replace=bool(result.replace),
        )

    def create(self, props: dict[str, Any]) -> CreateResult:
        desired = _plain(props)

        def run() -> CreateResult:
            with _session(desired) as client:
                state = client.power_state()  # also proves the credentials before any write
                apply(client, desired, list(SETTING_KEYS))
                seen = observe(client, desired)
                resource_id = f"{client.url}#{desired.get('system_id') or 'default'}"
                return CreateResult(resource_id, _outputs(desired, seen, state))

        return _scrubbed(desired, run)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        desired = _plain(news)
        changed = [k for k in compute_diff(olds, news).changed if k in SETTING_KEYS]

        def run() -> UpdateResult:
            with _session(desired) as client:
                state = client.power_state()
                apply(client, desired, changed)
                seen = observe(client, desired)
                return UpdateResult(_outputs(desired, seen, state))

        return _scrubbed(desired, run)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        state = _plain(props)

        def run() -> ReadResult:
            with _session(state) as client:
                power = client.power_state()
                seen = observe(client, state)
            outs = dict(state)
            drift: list[str] = []
            for key in SETTING_KEYS:
                if key not in seen:
                    continue
                if key == "boot_override":
                    if not _override_applied(state.get(key), seen[key]):
                        drift.append(key)
                        outs[key] = seen[key]
                    continue
                if key == "bios":
                    differing = _bios_changes(seen[key], state.get(key))
                    drift.extend(f"bios.{k}" for k in differing)
                    outs[key] = seen[key]
                    continue
                if seen[key] != state.get(key):
                    drift.append(key)
                outs[key] = seen[key]
            outs["power_state"] = power
            outs["drift"] = drift
            outs["bios_pending_reboot"] = seen.get("bios_pending_reboot", [])
            outs["reboot_required"] = bool(outs["bios_pending_reboot"])
            return ReadResult(id_, outs)

        return _scrubbed(state, run)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Leave the hardware safe: a pending one-time boot override is cleared (so a reboot
        does not reinstall the node); power, BIOS and services stay as they are."""
        state = _plain(props)

        def run() -> None:
            with _session(state) as client:
                override = client.boot_override()
                ours = state.get("boot_override") or {}
                if ours and override.get("target") == ours.get("target") and override.get("enabled") in ("Once", "Continuous"):
                    client.clear_boot_override()

        _scrubbed(state, run)


@dataclass
class BmcSettingsArgs:
    """Desired BMC settings of one node. `password` should be a Pulumi secret Output."""

    node: str
    url: pulumi.Input[str]
    username: pulumi.Input[str]
    password: pulumi.Input[str]
    system_id: str | None = None
    verify: bool | str = True
    timeout: float = 10
    retries: int = 3
    power_restore_policy: str | None = None
    boot_override: dict[str, str] | None = None
    boot_order: list[str] | None = None
    bios: dict[str, Any] = field(default_factory=dict)
    ntp_servers: list[str] | None = None
    syslog_servers: list[str] | None = None


#: One provider object for every BmcSettings (it is stateless).
PROVIDER = BmcSettingsProvider()


class BmcSettings(pulumi.dynamic.Resource, module="gpudc", name="BmcSettings"):
    """A node's BMC, held to `BmcSettingsArgs` over Redfish."""

    power_state: pulumi.Output[str]
    drift: pulumi.Output[list[str]]
    reboot_required: pulumi.Output[bool]
    bios_pending_reboot: pulumi.Output[list[str]]

    def __init__(self, name: str, args: BmcSettingsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props: dict[str, Any] = {
            "node": args.node,
            "url": args.url,
            "username": args.username,
            "password": pulumi.Output.secret(args.password),
            "system_id": args.system_id,
            "verify": args.verify,
            "timeout": args.timeout,
            "retries": args.retries,
            "power_restore_policy": args.power_restore_policy,
            "boot_override": args.boot_override,
            "boot_order": args.boot_order,
            "bios": dict(args.bios),
            "ntp_servers": args.ntp_servers,
            "syslog_servers": args.syslog_servers,
            # outputs
            "power_state": None,
            "drift": None,
            "reboot_required": None,
            "bios_pending_reboot": None,
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["password"]))
        super().__init__(PROVIDER, name, props, opts)
