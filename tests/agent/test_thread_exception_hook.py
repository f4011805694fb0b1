"""grpc's connectivity poller dying on a closed channel is not reported as a crash;
any other thread exception still is."""

from __future__ import annotations

import threading

import pytest

from agent import cli


def _poll_connectivity() -> None:  # named like grpc's internal polling function
    raise ValueError("Cannot monitor channel state: Channel closed!")


def _our_thread() -> None:
    raise ValueError("Channel closed")


def test_only_grpc_poller_errors_are_quietened(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[BaseException | None] = []
    monkeypatch.setattr(cli, "_default_excepthook", lambda args: reported.append(args.exc_value))
    monkeypatch.setattr(threading, "excepthook", cli._thread_exception_hook)
    for target in (_poll_connectivity, _our_thread):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
    assert [str(e) for e in reported] == ["Channel closed"]
