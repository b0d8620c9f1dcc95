"""The product's Redfish client: one BMC, through `sushy`, with timeouts, retries and clean errors.

Used by the `BmcSettings` Pulumi provider, the reprovision workflow and the lab. Every call
has a timeout (connect and read) and bounded retries with exponential backoff; errors are
`BmcError` subclasses whose messages never carry the password (they name the BMC by its URL
without any user-info part).

Supported over standard Redfish: power state and reset, one-time/continuous boot override,
BIOS attributes (current and pending), the system's PowerRestorePolicy, NTP servers through
the Manager's NetworkProtocol and syslog targets through EventService subscriptions of type
Syslog. A BMC that lacks one of these raises `BmcNotSupported` naming what is missing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
import sushy
from sushy import exceptions as sushy_exc

from gpudc.errors import GpudcError, UnreachableError

T = TypeVar("T")

#: Reset types of the Redfish ResetType enum (ComputerSystem.Reset).
RESET_TYPES = frozenset(t.value for t in sushy.ResetType)
#: Values of ComputerSystem.PowerRestorePolicy in the Redfish schema.
POWER_RESTORE_POLICIES = frozenset({"AlwaysOn", "AlwaysOff", "LastState"})
#: BootSourceOverrideEnabled values.
BOOT_OVERRIDE_ENABLED = frozenset(t.value for t in sushy.BootSourceOverrideEnabled)
#: BootSourceOverrideTarget values.
BOOT_TARGETS = frozenset(t.value for t in sushy.BootSource)
#: BootSourceOverrideMode values.
BOOT_MODES = frozenset(t.value for t in sushy.BootSourceOverrideMode)

_MAX_BACKOFF_S = 5.0
_SYSLOG_CONTEXT = "gpudc-syslog"

# sushy logs every failed request at WARNING/ERROR; our errors say it once, cleanly.
logging.getLogger("sushy").setLevel(logging.CRITICAL)


class BmcError(GpudcError):
    """A BMC call failed. Messages name the BMC (URL without credentials), never the password."""

    exit_code = 3


class BmcAuthError(BmcError):
    """The BMC refused the credentials (HTTP 401/403)."""


class BmcUnreachable(BmcError, UnreachableError):
    """Connection refused, timed out, or the BMC kept failing after the retries."""


class BmcNotSupported(BmcError):
    """The BMC does not offer this feature (the resource or property is absent)."""


def safe_url(url: str) -> str:
    """The URL without any `user:password@` part, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _cause(exc: BaseException) -> BaseException | None:
    """The requests exception under a sushy ConnectionError (sushy raises it inside `except`)."""
    return exc.__cause__ or exc.__context__


class BmcClient:
    """One BMC's Redfish service, one ComputerSystem on it.

    The connection (and the Redfish session or basic auth) is opened on the first call and
    reused; `close()` ends it. The client is not thread-safe; use one per worker.
    """

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        timeout: float = 10,
        retries: int = 3,
        verify: bool | str = True,
        system_id: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BmcError(f"BMC URL {safe_url(url)!r} is not an http(s) URL with a host")
        if parts.username or parts.password:
            raise BmcError(f"BMC URL {safe_url(url)}: give credentials separately, not in the URL")
        if timeout <= 0 or retries < 0:
            raise BmcError("BMC client: timeout must be > 0 and retries >= 0")
        self.url = safe_url(url).rstrip("/")
        self.username = username
        self._password = password
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.verify = verify
        self.system_id = system_id
        self._root: sushy.Sushy | None = None
        self._system: Any = None

    def __repr__(self) -> str:
        return f"BmcClient({self.url!r}, user={self.username!r})"

    def __enter__(self) -> BmcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("BmcClient holds a live connection and credentials; it does not pickle")

    # -- plumbing ---------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _connect(self) -> Any:
        if self._root is None:
            self._root = sushy.Sushy(
                self.url,
                username=self.username,
                password=self._password,
                verify=self.verify,
                server_side_retries=1,  # retries are ours (below), bounded and backed off
                server_side_retries_delay=0,
                read_timeout=self.timeout,
                connect_timeout=self.timeout,
            )
        if self._system is None:
            identity = self.system_id
            if identity is not None and not identity.startswith("/"):
                identity = f"/redfish/v1/Systems/{identity}"
            self._system = self._root.get_system(identity)
        return self._system

    def _translate(self, what: str, exc: Exception) -> BmcError:
        where = f"BMC {self.url}: {what}"
        if isinstance(exc, BmcError):
            return exc
        if isinstance(exc, sushy_exc.AccessError):
            return BmcAuthError(f"{where}: authentication failed for user {self.username!r} (HTTP {exc.status_code})")
        if isinstance(exc, sushy_exc.ConnectionError):
            cause = _cause(exc)
            kind = type(cause).__name__ if cause is not None else "connection error"
            if isinstance(cause, requests.exceptions.Timeout):
                return BmcUnreachable(f"{where}: timed out after {self.timeout:g}s ({kind})")
            return BmcUnreachable(f"{where}: unreachable ({kind})")
        if isinstance(exc, sushy_exc.ResourceNotFoundError):
            return BmcNotSupported(f"{where}: not offered by this BMC (HTTP 404)")
        if isinstance(exc, sushy_exc.MissingAttributeError):
            return BmcNotSupported(f"{where}: not offered by this BMC ({self._scrub(str(exc))})")
        if isinstance(exc, sushy_exc.InvalidParameterValueError):
            return BmcError(f"{where}: {self._scrub(str(exc))}")
        if isinstance(exc, sushy_exc.HTTPError):
            status = exc.status_code
            if status in (405, 501):
                return BmcNotSupported(f"{where}: not offered by this BMC (HTTP {status})")
            detail = self._scrub(str(getattr(exc, "detail", "") or ""))[:200]
            if isinstance(exc, sushy_exc.ServerSideError):
                return BmcUnreachable(f"{where}: BMC kept failing (HTTP {status}) {detail}".rstrip())
            return BmcError(f"{where}: HTTP {status} {detail}".rstrip())
        if isinstance(exc, sushy_exc.SushyError):
            return BmcError(f"{where}: {self._scrub(str(exc))}")
        return BmcError(f"{where}: {type(exc).__name__}: {self._scrub(str(exc))}")

    @staticmethod
    def _transient(exc: Exception, idempotent: bool) -> bool:
        if isinstance(exc, sushy_exc.ServerSideError):
            return idempotent
        if isinstance(exc, sushy_exc.ConnectionError):
            cause = _cause(exc)
            if idempotent:
                return True
            # A request that never reached the BMC is safe to send again; a read timeout may
            # have been executed already (a second ForceRestart is not harmless).
            return isinstance(cause, requests.exceptions.ConnectTimeout) or (
                isinstance(cause, requests.exceptions.ConnectionError)
                and not isinstance(cause, requests.exceptions.ReadTimeout)
            )
        return False

    def _call(self, what: str, fn: Callable[[Any], T], *, idempotent: bool = True) -> T:
        """Run fn(system) with bounded retries and backoff; translate every failure."""
        attempt = 0
        while True:
            try:
                return fn(self._connect())
            except Exception as exc:
                if attempt >= self.retries or not self._transient(exc, idempotent):
                    raise self._translate(what, exc) from None
                if isinstance(exc, sushy_exc.ConnectionError):
                    self._drop()
                time.sleep(min(_MAX_BACKOFF_S, 0.5 * 2**attempt))
                attempt += 1

    def _drop(self) -> None:
        root, self._root, self._system = self._root, None, None
        if root is not None:
            with contextlib.suppress(Exception):
                root._conn.close()

    def _conn(self) -> Any:
        assert self._root is not None
        return self._root._conn

    def _system_json(self, system: Any) -> dict[str, Any]:
        system.refresh(force=True)
        return dict(system.json)

    def close(self) -> None:
        """End the Redfish session (if any) and the HTTP connection."""
        root, self._root, self._system = self._root, None, None
        if root is not None:
            auth = getattr(root, "_auth", None)
            try:
                if auth is not None:
                    auth.close()
                root._auth = None
                root._conn.close()
            except Exception:
                pass

    # -- power ------------------------------------------------------------------------------

    def power_state(self) -> str:
        """The system's PowerState as Redfish spells it: On, Off, PoweringOn, PoweringOff."""

        def get(system: Any) -> str:
            state = self._system_json(system).get("PowerState")
            if not state:
                raise BmcNotSupported(f"BMC {self.url}: the system reports no PowerState")
            return str(state)

        return self._call("read power state", get)

    def reset(self, reset_type: str) -> None:
        """ComputerSystem.Reset with a Redfish ResetType (On, ForceOff, GracefulShutdown, ForceRestart, ...)."""
        if reset_type not in RESET_TYPES:
            raise BmcError(f"BMC {self.url}: unknown reset type {reset_type!r} (one of {', '.join(sorted(RESET_TYPES))})")

        def post(system: Any) -> None:
            system.refresh(force=True)
            allowed = {v.value for v in system.get_allowed_reset_system_values()}
            if reset_type not in allowed:
                raise BmcNotSupported(
                    f"BMC {self.url}: reset type {reset_type} not allowed here (allowed: {', '.join(sorted(allowed))})"
                )
            system.reset_system(sushy.ResetType(reset_type))

        self._call(f"reset {reset_type}", post, idempotent=False)

    def wait_power_state(self, state: str, timeout: float, interval: float = 1.0) -> str:
        """Poll until PowerState == state; BmcError (timed out) naming the last state seen."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            last = self.power_state()
            if last == state:
                return last
            if time.monotonic() + interval > deadline:
                raise BmcError(f"BMC {self.url}: power state did not become {state} within {timeout:g}s (last: {last})")
            time.sleep(interval)

    # -- boot -------------------------------------------------------------------------------

    def boot_override(self) -> dict[str, Any]:
        """{"target", "enabled", "mode"} of the system's Boot section (None where absent)."""

        def get(system: Any) -> dict[str, Any]:
            boot = self._system_json(system).get("Boot") or {}
            return {
                "target": boot.get("BootSourceOverrideTarget"),
                "enabled": boot.get("BootSourceOverrideEnabled"),
                "mode": boot.get("BootSourceOverrideMode"),
            }

        return self._call("read boot override", get)

    def set_boot_override(self, target: str, enabled: str = "Once", mode: str | None = None) -> None:
        """Boot from `target` (Pxe, Hdd, Cd, UefiHttp, None...) Once, Continuous or Disabled."""
        if target not in BOOT_TARGETS:
            raise BmcError(f"BMC {self.url}: unknown boot target {target!r} (one of {', '.join(sorted(BOOT_TARGETS))})")
        if enabled not in BOOT_OVERRIDE_ENABLED:
            raise BmcError(f"BMC {self.url}: boot override enabled must be one of {sorted(BOOT_OVERRIDE_ENABLED)}")
        if mode is not None and mode not in BOOT_MODES:
            raise BmcError(f"BMC {self.url}: boot mode must be one of {sorted(BOOT_MODES)}")

        def patch(system: Any) -> None:
            system.refresh(force=True)
            system.set_system_boot_options(
                target=sushy.BootSource(target),
                enabled=sushy.BootSourceOverrideEnabled(enabled),
                mode=sushy.BootSourceOverrideMode(mode) if mode else None,
            )

        self._call(f"set boot override {target}/{enabled}", patch)

    def clear_boot_override(self) -> None:
        """Leave the next boot to the normal boot order."""

        def patch(system: Any) -> None:
            system.refresh(force=True)
            # Target "None" with Disabled: the Redfish way to say "no override"; some BMCs
            # (and sushy-emulator) reject a PATCH that carries only the Enabled property.
            # (sushy would refuse "None" where the BMC does not list it as allowable.)
            self._conn().patch(
                system.path,
                data={"Boot": {"BootSourceOverrideTarget": "None", "BootSourceOverrideEnabled": "Disabled"}},
            )

        self._call("clear boot override", patch)

    def boot_order(self) -> list[str]:
        def get(system: Any) -> list[str]:
            boot = self._system_json(system).get("Boot") or {}
            if "BootOrder" not in boot:
                raise BmcNotSupported(f"BMC {self.url}: the system exposes no Boot.BootOrder")
            return [str(x) for x in boot["BootOrder"]]

        return self._call("read boot order", get)

    def set_boot_order(self, order: list[str]) -> None:
        def patch(system: Any) -> None:
            self._boot_order_check(system)
            self._conn().patch(system.path, data={"Boot": {"BootOrder": list(order)}})

        self._call("set boot order", patch)

    def _boot_order_check(self, system: Any) -> None:
        if "BootOrder" not in (self._system_json(system).get("Boot") or {}):
            raise BmcNotSupported(f"BMC {self.url}: the system exposes no Boot.BootOrder")

    # -- BIOS -------------------------------------------------------------------------------

    def _bios(self, system: Any) -> Any:
        system.refresh(force=True)
        if not system.json.get("Bios"):
            raise BmcNotSupported(f"BMC {self.url}: the system exposes no Bios resource")
        bios = system.bios
        bios.refresh(force=True)
        return bios

    def get_bios(self) -> dict[str, Any]:
        """Current BIOS attributes."""
        return self._call("read BIOS attributes", lambda system: dict(self._bios(system).attributes))

    def bios_pending(self) -> dict[str, Any]:
        """Attributes staged in BIOS Settings that differ from the current ones (applied at next reset)."""

        def get(system: Any) -> dict[str, Any]:
            bios = self._bios(system)
            current = dict(bios.attributes)
            pending = dict(bios.pending_attributes or {})
            return {k: v for k, v in pending.items() if current.get(k) != v}

        return self._call("read pending BIOS attributes", get)

    def set_bios(self, attrs: dict[str, Any]) -> None:
        """Stage BIOS attributes (most BMCs apply them at the next reset)."""
        if not attrs:
            return
        self._call("set BIOS attributes", lambda system: self._bios(system).set_attributes(dict(attrs)))

    # -- power restore policy ---------------------------------------------------------------

    def power_restore_policy(self) -> str:
        def get(system: Any) -> str:
            value = self._system_json(system).get("PowerRestorePolicy")
            if value is None:
                raise BmcNotSupported(f"BMC {self.url}: the system exposes no PowerRestorePolicy")
            return str(value)

        return self._call("read power restore policy", get)

    def set_power_restore_policy(self, policy: str) -> None:
        if policy not in POWER_RESTORE_POLICIES:
            raise BmcError(f"BMC {self.url}: power restore policy must be one of {sorted(POWER_RESTORE_POLICIES)}")

        def patch(system: Any) -> None:
            if "PowerRestorePolicy" not in self._system_json(system):
                raise BmcNotSupported(f"BMC {self.url}: the system exposes no PowerRestorePolicy")
            self._conn().patch(system.path, data={"PowerRestorePolicy": policy})

        self._call(f"set power restore policy {policy}", patch)

    # -- manager: NTP and syslog ------------------------------------------------------------

    def _manager_path(self, system: Any) -> str:
        system.refresh(force=True)
        links = (system.json.get("Links") or {}).get("ManagedBy") or []
        if links:
            return str(links[0]["@odata.id"])
        members = self._conn().get("/redfish/v1/Managers").json().get("Members") or []
        if not members:
            raise BmcNotSupported(f"BMC {self.url}: no Manager resource")
        return str(members[0]["@odata.id"])

    def _network_protocol_path(self, system: Any) -> str:
        manager = self._conn().get(self._manager_path(system)).json()
        link = (manager.get("NetworkProtocol") or {}).get("@odata.id")
        if not link:
            raise BmcNotSupported(f"BMC {self.url}: the Manager exposes no NetworkProtocol (NTP settings)")
        return str(link)

    def ntp_servers(self) -> list[str]:
        def get(system: Any) -> list[str]:
            proto = self._conn().get(self._network_protocol_path(system)).json()
            ntp = proto.get("NTP")
            if ntp is None:
                raise BmcNotSupported(f"BMC {self.url}: the Manager's NetworkProtocol has no NTP section")
            return [str(s) for s in ntp.get("NTPServers") or [] if s]

        return self._call("read NTP servers", get)

    def set_ntp_servers(self, servers: list[str]) -> None:
        def patch(system: Any) -> None:
            path = self._network_protocol_path(system)
            if self._conn().get(path).json().get("NTP") is None:
                raise BmcNotSupported(f"BMC {self.url}: the Manager's NetworkProtocol has no NTP section")
            self._conn().patch(path, data={"NTP": {"ProtocolEnabled": bool(servers), "NTPServers": list(servers)}})

        self._call("set NTP servers", patch)

    def _event_service(self) -> dict[str, Any]:
        root = self._conn().get("/redfish/v1/").json()
        link = (root.get("EventService") or {}).get("@odata.id")
        if not link:
            raise BmcNotSupported(f"BMC {self.url}: no EventService (syslog targets)")
        service: dict[str, Any] = self._conn().get(link).json()
        if "Syslog" not in (service.get("SubscriptionTypes@Redfish.AllowableValues") or service.get("SubscriptionTypes") or []):
            raise BmcNotSupported(f"BMC {self.url}: the EventService offers no Syslog subscriptions")
        return service

    def _syslog_subscriptions(self) -> list[tuple[str, str]]:
        service = self._event_service()
        link = (service.get("Subscriptions") or {}).get("@odata.id")
        if not link:
            raise BmcNotSupported(f"BMC {self.url}: the EventService has no Subscriptions collection")
        found: list[tuple[str, str]] = []
        for member in self._conn().get(link).json().get("Members") or []:
            sub = self._conn().get(member["@odata.id"]).json()
            if sub.get("SubscriptionType") == "Syslog":
                found.append((str(member["@odata.id"]), str(sub.get("Destination"))))
        return found

    def syslog_servers(self) -> list[str]:
        """Syslog destinations (EventService subscriptions of type Syslog)."""
        return self._call("read syslog targets", lambda _s: sorted(dest for _, dest in self._syslog_subscriptions()))

    def set_syslog_servers(self, servers: list[str]) -> None:
        """Make the Syslog subscriptions exactly `servers` (`udp://host:514`-style destinations)."""

        def apply(_system: Any) -> None:
            current = self._syslog_subscriptions()
            service = self._event_service()
            link = service["Subscriptions"]["@odata.id"]
            for path, dest in current:
                if dest not in servers:
                    self._conn().delete(path)
            have = {dest for _, dest in current}
            for dest in servers:
                if dest not in have:
                    proto = "SyslogTCP" if dest.startswith("tcp://") else "SyslogUDP"
                    self._conn().post(
                        link,
                        data={
                            "Destination": dest,
                            "SubscriptionType": "Syslog",
                            "Protocol": proto,
                            "Context": _SYSLOG_CONTEXT,
                        },
                    )

        self._call("set syslog targets", apply)
