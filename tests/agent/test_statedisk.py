"""The state-disk reserve: an ENOSPC state write releases it and is tried once more."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from agent.statedisk import StateDisk


def test_enospc_releases_the_reserve_and_retries(tmp_path: Path) -> None:
    disk = StateDisk(tmp_path, reserve_bytes=128 * 1024)
    assert disk.take_reserve() and disk.has_reserve()
    calls: list[bool] = []

    def write() -> str:
        calls.append(disk.has_reserve())
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return "written"

    assert disk.write("the checkpoint", write) == "written"
    assert calls == [True, False]  # the retry ran with the reserve released
    assert disk.take_reserve() and disk.has_reserve()


def test_without_a_reserve_or_for_other_errors_the_error_stays(tmp_path: Path) -> None:
    disk = StateDisk(tmp_path, reserve_bytes=4096)

    def full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        disk.write("x", full)  # no reserve to release
    assert disk.take_reserve()

    def denied() -> None:
        raise OSError(errno.EACCES, "Permission denied")

    with pytest.raises(OSError, match="Permission"):
        disk.write("x", denied)
    assert disk.has_reserve()  # not spent on an error it cannot help with
