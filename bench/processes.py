"""Child processes of the benchmark: started with their output in a log file, always stopped."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path


class BenchError(Exception):
    """A scenario could not complete (a process died, a wait timed out, ...)."""


class Proc:
    """One child process with stdout+stderr in `log_path`; `stop()` is idempotent."""

    def __init__(
        self, argv: list[str], log_path: Path, *, env: Mapping[str, str] | None = None
    ) -> None:
        self.argv = argv
        self.name = Path(argv[0]).name
        self.log_path = log_path
        self._log = log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self, what: str) -> None:
        """Raise `BenchError` with the log tail if the process has exited."""
        if not self.alive():
            raise BenchError(
                f"{self.name} exited with {self.process.returncode} while {what}; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        return self.process.returncode


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.3)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_until(
    condition: Callable[[], bool],
    what: str,
    *,
    timeout: float,
    interval: float = 0.1,
    watch: tuple[Proc, ...] = (),
) -> None:
    """Poll `condition` until true; `BenchError` on timeout or when a watched process dies."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        for proc in watch:
            proc.check_alive(f"waiting for {what}")
        if time.monotonic() > deadline:
            logs = "".join(f"\n--- {p.name} ({p.log_path}) ---\n{p.log_tail(1500)}" for p in watch)
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}{logs}")
        time.sleep(interval)


def start_py_spy(pid: int, raw: Path, *flags: str) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` at 200 Hz into `raw` (its raw, collapsed-stack format), with
    `flags` such as ``--threads`` or ``--gil``. py-spy is a dev tool, not a dependency:
    `pip install py-spy` into the venv. Stop it with `stop_py_spy`."""
    argv = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid)]
    argv += ["--nonblocking", *flags, "--rate", "200", "--format", "raw", "--output", str(raw)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_py_spy(spy: subprocess.Popen[bytes] | None) -> None:
    """Stop `spy` (SIGINT makes py-spy write its output) and wait for it."""
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
