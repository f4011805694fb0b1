"""What machine and software a benchmark ran on (for the results' header)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def _first(path: Path, key: str) -> str:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip() if ":" in line else line.split("=", 1)[1]
    except OSError:
        pass
    return ""


def describe(proc: Path = Path("/proc"), etc: Path = Path("/etc")) -> dict[str, Any]:
    """CPU model, CPUs usable, memory, kernel, distribution, load average."""
    mem_kib = _first(proc / "meminfo", "MemTotal").split()
    try:
        load = (proc / "loadavg").read_text().split()[:3]
    except OSError:
        load = []
    return {
        "cpu_model": _first(proc / "cpuinfo", "model name") or platform.processor() or "?",
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "mem_total_gib": round(int(mem_kib[0]) / 2**20, 1) if mem_kib else None,
        "kernel": platform.release(),
        "os": _first(etc / "os-release", "PRETTY_NAME=").strip('"') or platform.system(),
        "python": platform.python_version(),
        "loadavg_at_start": [float(x) for x in load],
    }


def loadavg(proc: Path = Path("/proc")) -> list[float]:
    try:
        return [float(x) for x in (proc / "loadavg").read_text().split()[:3]]
    except OSError:
        return []
