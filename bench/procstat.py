"""CPU time and memory of a process, from /proc (Linux)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (all its threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = text[text.rindex(")") + 2 :].split()
    # After the name: state is field 3, utime field 14, stime field 15 (1-based).
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the largest resident set size `pid` has had, in KiB."""
    return _status_kib(pid, "VmHWM")


def pss_kib(pid: int) -> int:
    """Proportional set size (pages shared with other processes, e.g. since a fork,
    divided among them), in KiB: summed over processes, their memory counted once."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    """VmRSS: the current resident set size, in KiB."""
    return _status_kib(pid, "VmRSS")


@dataclass(frozen=True)
class CpuMark:
    """CPU seconds of a process at one moment; `since` gives the difference."""

    pid: int
    seconds: float

    @classmethod
    def now(cls, pid: int) -> CpuMark:
        return cls(pid, cpu_seconds(pid))

    def since(self) -> float:
        return cpu_seconds(self.pid) - self.seconds
