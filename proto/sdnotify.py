"""systemd readiness and watchdog notifications over the notify socket (sd_notify(3)).

Both services run as `Type=notify` units with `WatchdogSec=`: they send READY=1 once
they serve, WATCHDOG=1 at half the watchdog interval while their main loop is healthy,
and STOPPING=1 when they begin to shut down. Written against the documented datagram
protocol so that no extra dependency is needed; outside systemd (no NOTIFY_SOCKET)
every call is a no-op.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping


class Notifier:
    """Sends state strings to the service manager, if there is one."""

    def __init__(self, socket_path: str | None, watchdog_usec: int | None) -> None:
        self._address = _address(socket_path) if socket_path else None
        self._watchdog_usec = watchdog_usec

    @classmethod
    def from_env(cls, env: Mapping[str, str], pid: int) -> Notifier:
        """Read NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID as systemd sets them."""
        watchdog: int | None = None
        usec = env.get("WATCHDOG_USEC", "")
        owner = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not owner or owner == str(pid)):
            watchdog = int(usec)
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the interval systemd enforces, as sd_watchdog_enabled advises."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 2_000_000

    def notify(self, state: str) -> bool:
        """Send one state string (e.g. "READY=1"); False when not under systemd or on error."""
        if self._address is None:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(self._address)
                sock.sendall(state.encode("utf-8"))
            except OSError:
                return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")


def _address(path: str) -> str:
    # A leading "@" names a socket in the abstract namespace (a leading NUL byte).
    return "\0" + path[1:] if path.startswith("@") else path
