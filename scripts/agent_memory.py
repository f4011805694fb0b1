"""Measure the agent's RSS with a large backlog, and its file→acked throughput.

    .venv/bin/python scripts/agent_memory.py [--lines 300000]
    .venv/bin/python scripts/agent_memory.py --imports

--imports: what each library the agent loads adds to RSS (anonymous memory and mapped
library pages), in a fresh interpreter, in the order `crm-audit-agent run` loads them.

Phase 1: no collector listening; N lines are written and the agent spools them all
(the backlog is on disk). Phase 2: an in-process collector that acks at once (the
fake from tests/agent) starts; the agent ships the backlog. Prints peak RSS of each
phase, events/s and CPU-seconds per million events of the agent process.
Development tool only: it imports the test helpers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from concurrent import futures

import grpc

from agent.checkpoint import CheckpointStore
from proto.v1 import audit_pb2_grpc as pb_grpc
from tests.agent.certs import make_pki
from tests.agent.fake_collector import FakeCollector
from tests.helpers import free_port

CLI = Path(sys.executable).parent / "crm-audit-agent"
TICKS = os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.stop = threading.Event()

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def run(self) -> None:
        while not self.stop.wait(0.1):
            try:
                self.peak_kib = max(self.peak_kib, self.rss_kib())
            except OSError:
                return


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class NullCollector(FakeCollector):
    """Acks OK without keeping the batches (the fake keeps copies: memory of the test)."""

    def Ship(self, request_iterator, context):  # type: ignore[no-untyped-def]
        for batch in request_iterator:
            with self.cond:
                self.received.append(batch.__class__(batch_id=batch.batch_id))
                self.cond.notify_all()
            yield self.ack(batch)

    @staticmethod
    def ack(batch):  # type: ignore[no-untyped-def]
        from proto.v1 import audit_pb2 as pb

        return pb.Ack(batch_id=batch.batch_id, status=pb.Ack.STATUS_OK, indexed=len(batch.events))


# In load order; each row is measured after the rows above it (shared dependencies count
# once, where they are first loaded). "agent.runtime" pulls in the agent's own modules,
# its config models (pydantic) and parsers.
IMPORTS = (
    "google.protobuf.message",
    "grpc",
    "cryptography.hazmat.primitives.asymmetric.ed25519",
    "cryptography.x509",
    "pydantic",
    "pydantic.main",
    "yaml",
    "watchdog.observers",
    "msgpack",
    "zstandard",
    "prometheus_client",
    "proto.v1.audit_pb2",
    "agent.config",
    "agent.runtime",
    "agent.cli",
)
_PROBE = """
import importlib, sys
def rss():
    fields = {}
    for line in open("/proc/self/status"):
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0]) / 1024
    return fields
before = rss()
print("python", before["VmRSS"], before["RssAnon"], before["RssFile"])
for module in sys.argv[1:]:
    importlib.import_module(module)
    now = rss()
    print(module, *(now[k] - before[k] for k in ("VmRSS", "RssAnon", "RssFile")))
    before = now
"""


def imports() -> None:
    """Print the RSS each import adds, measured in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *IMPORTS],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    print(f"{'import':52} {'RSS MiB':>8} {'anon':>6} {'files':>6}")
    total = 0.0
    for line in out.splitlines():
        name, rss, anon, files = line.split()
        total += float(rss)
        print(f"{name:52} {float(rss):8.1f} {float(anon):6.1f} {float(files):6.1f}")
    print(f"{'total after import':52} {total:8.1f}")


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--lines", type=int, default=300_000)
    args.add_argument("--imports", action="store_true", help="only the RSS of each import")
    parsed = args.parse_args()
    if parsed.imports:
        imports()
        return
    n = parsed.lines
    root = Path(tempfile.mkdtemp(prefix="agent-mem-"))
    pki = make_pki(root / "pki")
    port = free_port()
    (root / "logs").mkdir()
    with (root / "logs" / "app.jsonl").open("w") as out:
        for i in range(n):
            record = {
                "timestamp": "2026-11-02T09:00:00Z",
                "event": "record.update",
                "user": {"id": f"u{i % 500}", "name": "Jane Doe", "roles": ["agent"]},
                "source_ip": "10.1.2.3",
                "object": {"type": "customer", "id": f"C{i}"},
                "changes": [{"field": "iban", "old": "DE00 0000", "new": "DE11 1111"}],
                "n": i,
            }
            out.write(json.dumps(record) + "\n")
    size = (root / "logs" / "app.jsonl").stat().st_size
    (root / "agent.yaml").write_text(
        f"""agent_id: crm-host-1
state_dir: state
collector:
  endpoint: "127.0.0.1:{port}"
  server_name: localhost
  tls: {{ca: pki/ca.crt, cert: pki/agents/crm-host-1.crt, key: pki/agents/crm-host-1.key}}
  retry: {{initial_s: 0.2, max_s: 1.0}}
sources:
  - {{name: crm_app, format: jsonlines, paths: ["logs/*.jsonl"]}}
"""
    )
    process = subprocess.Popen(
        [str(CLI), "run", "-c", str(root / "agent.yaml"), "--log-level", "WARNING"],
        stderr=subprocess.DEVNULL,
    )
    sampler = Sampler(process.pid)
    sampler.start()
    try:
        spool = root / "state" / "spool"
        start = time.monotonic()
        last, stable = -1, 0
        while stable < 10:
            time.sleep(0.5)
            now = sum(p.stat().st_size for p in spool.glob("*.seg")) if spool.exists() else 0
            stable = stable + 1 if now == last and now > 0 else 0
            last = now
        spool_s = time.monotonic() - start - 5.0
        print(f"{n} lines, {size / 1e6:.1f} MB of log; spooled into {last / 1e6:.1f} MB")
        print(
            f"phase 1 (spooling, no collector): {n / spool_s:,.0f} lines/s, "
            f"peak RSS {sampler.peak_kib / 1024:.1f} MiB, now {sampler.rss_kib() / 1024:.1f} MiB"
        )
        sampler.peak_kib = 0
        cpu0 = cpu_seconds(process.pid)
        collector = NullCollector()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_CollectorServicer_to_server(collector, server)
        credentials = grpc.ssl_server_credentials(
            [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
            root_certificates=pki.ca.read_bytes(),
            require_client_auth=True,
        )
        server.add_secure_port(f"127.0.0.1:{port}", credentials)
        server.start()
        start = time.monotonic()
        store = CheckpointStore(root / "state")
        try:
            while store.load().next_sequence <= n:
                time.sleep(0.2)
        finally:
            elapsed = time.monotonic() - start
            cpu = cpu_seconds(process.pid) - cpu0
            server.stop(grace=None).wait()
        print(
            f"phase 2 (shipping the backlog to an instant-ack collector): "
            f"{n / elapsed:,.0f} events/s, {cpu / n * 1e6:.0f} CPU-s per million events, "
            f"peak RSS {sampler.peak_kib / 1024:.1f} MiB"
        )
        left = sum(p.stat().st_size for p in spool.glob("*.seg"))
        print(f"spool after all acks: {left / 1e6:.1f} MB")
    finally:
        sampler.stop.set()
        process.terminate()
        process.wait(30)
    import shutil

    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
