"""What the agent costs in memory: its imports, and a large backlog (development tool).

    .venv/bin/python -m bench.agent_memory [--config config/agent.yaml]
    .venv/bin/python -m bench.agent_memory --backlog [LINES]   (default 300,000)

Imports (the default); each measurement runs in a fresh interpreter:
- per module: the RSS it adds to a bare interpreter when imported alone (its own
  dependencies included, so rows overlap) and its cumulative `-X importtime`; then the
  RSS it adds when imported in this order after the rows above it (what it costs the
  agent beyond what the others already loaded: the rows add up to `agent.runtime`);
- the agent: RSS after `import agent.runtime`, then after loading `--config` and building
  its sources' parsers (what `crm-audit-agent run` holds before reading a line), and
  which optional modules that pulled in.

--backlog: the real `crm-audit-agent run` (the bench's agent.yaml: shipped batching
defaults) with LINES jsonlines records. Phase 1: no collector listens; the agent spools
them all (the backlog is on disk). Phase 2: a collector that acks at once
(`bench.nullcollector`, real mTLS) starts on that port; the agent ships the backlog.
Prints each phase's peak RSS (VmRSS polled every 0.1 s), phase 2's events/s and CPU-s
per million events of the agent process, and the spool left after the last ack.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MODULES = (
    "proto.v1.audit_pb2",
    "grpc",
    "cryptography.x509",
    "pydantic",
    "yaml",
    "watchdog.observers",
    "zstandard",
    "msgpack",
    "msgspec",
    "agent.config",
    "agent.runtime",
    "prometheus_client",
    "jmespath",
    "agent.parsers.pgaudit",
    "agent.parsers.mariadb",
    "agent.parsers.mysql",
    "agent.parsers.salesforce",
)
# Modules only some configurations need: a jsonlines-only agent should not hold them.
OPTIONAL = (
    "jmespath",
    "agent.parsers.pgaudit",
    "agent.parsers.mariadb",
    "agent.parsers.mysql",
    "agent.parsers.salesforce",
    "agent.parsers.sql",
    "agent.parsers.regex",
    "agent.parsers.csvtext",
    "agent.parsers.privacy",
)

_RSS = """
def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
"""


def _run(code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *flags, "-c", _RSS + code], capture_output=True, text=True, check=True
    )


def module_cost(name: str) -> tuple[float, float]:
    """(MiB of RSS added, ms of cumulative import time) of importing `name` alone."""
    done = _run(f"base = rss()\nimport {name}\nprint(rss() - base)", "-X", "importtime")
    ms = 0.0
    for line in done.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == name:
            ms = int(parts[1]) / 1000
    return float(done.stdout.strip()), ms


def marginal_costs() -> list[float]:
    """MiB each module of MODULES adds when imported after the ones before it."""
    code = f"""
import importlib
steps = []
for name in {list(MODULES)!r}:
    before = rss()
    importlib.import_module(name)
    steps.append(rss() - before)
print(" ".join(str(step) for step in steps))
"""
    return [float(step) for step in _run(code).stdout.split()]


def agent_rss(config: str) -> dict[str, object]:
    code = f"""
import json, sys
from pathlib import Path
start = rss()
import agent.runtime
imported = rss()
from agent.config import load_config_and_secrets
from agent.parsers import get_parser
loaded, _ = load_config_and_secrets(Path({config!r}), {{}}, tls_files=False)
parsers = [get_parser(s.format, s.mapping, s.parsed_options(), s.actions) for s in loaded.sources]
print(json.dumps({{"python": start, "imported": imported, "configured": rss(),
    "formats": sorted({{s.format for s in loaded.sources}}),
    "optional": [m for m in {list(OPTIONAL)!r} if m in sys.modules]}}))
"""
    result: dict[str, object] = json.loads(_run(code).stdout)
    return result


class _PeakRss(threading.Thread):
    """Polls a process's VmRSS; `peak` is the largest seen since the last `reset`."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.halt = threading.Event()

    def reset(self) -> None:
        self.peak = 0

    def run(self) -> None:
        from bench.procstat import rss_kib

        while not self.halt.wait(0.1):
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except OSError:
                return


def _write_backlog(path: Path, lines: int) -> int:
    with path.open("w", encoding="utf-8") as out:
        for i in range(lines):
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
    return path.stat().st_size


def _spool_bytes(spool: Path) -> int:
    return sum(p.stat().st_size for p in spool.glob("*.seg")) if spool.exists() else 0


def backlog(lines: int) -> None:
    """The agent's RSS spooling `lines` records with no collector, then shipping them."""
    from bench.nullcollector import NullCollector
    from bench.pipeline import AGENT_ID, make_pki, render_file
    from bench.processes import free_port
    from bench.procstat import cpu_seconds, rss_kib

    root = Path(tempfile.mkdtemp(prefix="agent-backlog-"))
    try:
        pki = make_pki(root / "pki")
        port = free_port()
        (root / "logs").mkdir()
        size = _write_backlog(root / "logs" / "app.jsonl", lines)
        config = root / "agent.yaml"
        config.write_text(
            render_file(
                "agent.yaml",
                agent_id=AGENT_ID,
                state_dir=root / "state",
                port=port,
                ca=pki / "ca.crt",
                cert=pki / "agents" / f"{AGENT_ID}.crt",
                key=pki / "agents" / f"{AGENT_ID}.key",
                glob=root / "logs" / "*.jsonl",
            ),
            encoding="utf-8",
        )
        agent = subprocess.Popen(
            [str(Path(sys.executable).parent / "crm-audit-agent"), "run", "-c", str(config)],
            stderr=subprocess.DEVNULL,
        )
        sampler = _PeakRss(agent.pid)
        sampler.start()
        try:
            spool = root / "state" / "spool"
            started = time.monotonic()
            last, stable = -1, 0
            while stable < 10:  # the spool stopped growing for 5 s: all lines read
                time.sleep(0.5)
                now = _spool_bytes(spool)
                stable = stable + 1 if now == last and now > 0 else 0
                last = now
            spool_s = time.monotonic() - started - 5.0
            print(f"{lines:,} lines, {size / 1e6:.1f} MB of log; spooled into {last / 1e6:.1f} MB")
            print(
                f"phase 1 (spooling, no collector): {lines / spool_s:,.0f} lines/s, "
                f"peak RSS {sampler.peak / 1024:.1f} MiB, now {rss_kib(agent.pid) / 1024:.1f} MiB"
            )
            sampler.reset()
            cpu0 = cpu_seconds(agent.pid)
            collector = NullCollector(
                ca=pki / "ca.crt", cert=pki / "collector.crt", key=pki / "collector.key"
            )
            collector.start(port)
            started = time.monotonic()
            try:
                done = collector.wait_for(lines, timeout=600 + lines / 100)
            finally:
                elapsed = (done or time.monotonic()) - started
                cpu = cpu_seconds(agent.pid) - cpu0
                collector.stop()
            if done is None:
                print(f"phase 2: only {collector.events:,} of {lines:,} events acked in time")
                return
            print(
                f"phase 2 (shipping the backlog to an instant-ack collector): "
                f"{lines / elapsed:,.0f} events/s, {cpu / lines * 1e6:.0f} CPU-s per million "
                f"events, peak RSS {sampler.peak / 1024:.1f} MiB"
            )
            time.sleep(2.0)  # acked segments are deleted after the ack is saved
            print(f"spool after all acks: {_spool_bytes(spool) / 1e6:.1f} MB")
        finally:
            sampler.halt.set()
            agent.terminate()
            agent.wait(30)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config/agent.yaml")
    parser.add_argument(
        "--backlog",
        type=int,
        nargs="?",
        const=300_000,
        metavar="LINES",
        help="measure a spooled backlog of LINES records instead (default 300000)",
    )
    args = parser.parse_args()
    if args.backlog is not None:
        backlog(args.backlog)
        return
    print(f"{'module':<26} {'alone MiB':>9} {'import ms':>10} {'in order MiB':>13}")
    for name, step in zip(MODULES, marginal_costs(), strict=True):
        mib, ms = module_cost(name)
        print(f"{name:<26} {mib:9.1f} {ms:10.1f} {step:13.1f}")
    agent = agent_rss(args.config)
    print(
        f"python alone {agent['python']:.1f} MiB; after import agent.runtime "
        f"{agent['imported']:.1f} MiB; after loading {args.config} ({agent['formats']}) and "
        f"building its parsers {agent['configured']:.1f} MiB"
    )
    print(f"optional modules loaded: {', '.join(agent['optional']) or 'none'}")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
