"""Run the real console scripts as processes in tests, and stop them afterwards."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent


class ManagedProcess:
    """A console script started with its output in a log file; `stop()` is idempotent."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [str(BIN / argv[0]), *argv[1:]], stdout=self._log, stderr=subprocess.STDOUT, env=env
        )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def wait_for(
    condition: Callable[[], bool],
    what: str,
    timeout: float = 60.0,
    interval: float = 0.2,
    watch: list[ManagedProcess] | None = None,
) -> None:
    """Poll `condition` until true; fail with `what` (and the logs of `watch`) otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        for proc in watch or []:
            if not proc.alive():
                raise AssertionError(
                    f"{proc.argv[0]} exited while waiting for {what}:\n{proc.log()}"
                )
        time.sleep(interval)
    logs = "\n".join(f"--- {p.argv[0]} log ---\n{p.log()[-4000:]}" for p in watch or [])
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
