"""The collector's process CPU per event under a real load, optionally profiled
(development tool, not a scenario).

    .venv/bin/python -m bench.collectorcpu [--events 30000] [--runs 2] [--agents 1]
                                           [--detection] [--py-spy DIR]

Per run, as the e2e scenario sets it up (bench.scenarios.e2e: a real collector and
agent process, keys registered, seals required, checkpoints on, an embedded OpenSearch
node or ``$OPENSEARCH_URL``): after a warm-up line, --events corpus lines are appended
and the clock runs until all are searchable. Printed per run: the collector's and the
agent's process CPU seconds per event (µs/event = CPU-s per million events).
--detection adds the shipped detection rules (`config/rules.yaml`, as
`config/collector.yaml` has them): the inline rules then run over every batch.

With --py-spy DIR (py-spy installed in the venv as a dev tool), the collector is sampled
while the events flow (non-blocking, so it is not paused; only the thread holding the
GIL, so the samples show where Python CPU goes, not threads waiting on a socket). DIR
gets the raw collapsed stacks of each run and a summary of where the samples fall: per
function, its own samples and those under it. Process CPU is then slightly higher
(sampling reads the collector's memory): compare numbers of runs made the same way.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from bench.corpus import append_all, sample_lines, warmup_line
from bench.pipeline import AGENT_ID, Bench, Integrity, agent, collector, make_pki, run_scope
from bench.processes import free_port, start_py_spy, stop_py_spy
from bench.procstat import CpuMark
from bench.scenarios.shipping import timeout_for
from bench.search import client, opensearch_node, wait_for_count
from collector.admin.pki import issue_agent

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def summarize(raw: Path, top: int = 40) -> str:
    """Own and inclusive samples per function from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f.split(" (", 1)[0] + " " + f.rsplit("/", 1)[-1].split(":")[0].rstrip(")")
                  for f in stack.split(";")[1:]]  # fmt: skip
        total += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    out = [f"{total} samples"]
    out.append("-- own --")
    out += [f"{n / total:6.1%} {name}" for name, n in own.most_common(top)]
    out.append("-- inclusive --")
    out += [f"{n / total:6.1%} {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(out)


def scrape(port: int) -> dict[str, float]:
    """The collector's counters this tool reads, summed over their labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode("utf-8")
    totals = {"batches": 0.0, "bulks": 0.0}
    for line in text.splitlines():
        if line.startswith("crm_audit_collector_batches_total{"):
            totals["batches"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("crm_audit_collector_bulk_requests_total{"):
            totals["bulks"] += float(line.rsplit(" ", 1)[1])
    return totals


def node_pid(home: Path) -> int | None:
    """The embedded OpenSearch node's process (its command line names `home`), or None
    (an external node: ``$OPENSEARCH_URL``)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"java") and any(str(home).encode() in a for a in argv):
            return int(proc.name)
    return None


def agent_ids(count: int) -> list[str]:
    return [AGENT_ID] + [f"{AGENT_ID}-{k}" for k in range(1, count)]


def one_run(
    bench: Bench,
    lines: list[bytes],
    spy_dir: Path | None,
    number: int,
    agents: int,
    detection: bool = False,
) -> str:
    with run_scope(bench, "collectorcpu") as (prefix, directory):
        index = f"{prefix}-events-*"
        integrity = Integrity.under(directory)
        metrics_port = free_port()
        extra = integrity.collector_yaml() + f'\nmetrics:\n  listen: "127.0.0.1:{metrics_port}"\n'
        if detection:
            extra += f"\ndetection:\n  rules: {bench.repo / 'config' / 'rules.yaml'}\n"
        logs = []
        for k in range(agents):
            log_dir = directory / ("logs" if k == 0 else f"logs-{k}")
            log_dir.mkdir()
            (log_dir / "warmup.jsonl").write_bytes(warmup_line(f"{prefix}-{k}"))
            logs.append(log_dir)
        with (
            collector(bench, directory, prefix, extra=extra) as (cproc, port),
            ExitStack() as stack,
        ):
            aprocs = []
            for k, agent_id in enumerate(agent_ids(agents)):
                home = directory if k == 0 else directory / f"agent-{k}"
                home.mkdir(exist_ok=True)
                aprocs.append(
                    stack.enter_context(
                        agent(
                            bench,
                            home,
                            str(logs[k] / "*.jsonl"),
                            port,
                            keys=integrity.keys,
                            agent_id=agent_id,
                        )
                    )
                )
            watch = (cproc, *aprocs)
            wait_for_count(
                bench.os, index, agents, started=time.monotonic(), timeout=120, watch=watch,
                interval=0.2,
            )  # fmt: skip
            spy = None
            raw = None
            if spy_dir is not None:
                raw = spy_dir / f"collector-{number}.txt"
                spy = start_py_spy(cproc.pid, raw, "--gil")
            before = scrape(metrics_port)
            ccpu, acpu = CpuMark.now(cproc.pid), [CpuMark.now(p.pid) for p in aprocs]
            node = node_pid(bench.work / "node")
            ncpu = CpuMark.now(node) if node is not None else None
            started = time.monotonic()
            append_all(
                [log_dir / "crm-audit.jsonl" for log_dir in logs],
                [lines[k::agents] for k in range(agents)],
                1000,
            )
            elapsed = wait_for_count(
                bench.os, index, agents + len(lines), started=started,
                timeout=timeout_for(len(lines)), watch=watch,
            )  # fmt: skip
            collector_s, agent_s = ccpu.since(), sum(mark.since() for mark in acpu)
            node_s = ncpu.since() if ncpu is not None else None
            after = scrape(metrics_port)
            stop_py_spy(spy)
        n = len(lines)
        batches = after["batches"] - before["batches"]
        bulks = after["bulks"] - before["bulks"]
        text = (
            f"run {number}: {n} events from {agents} agent(s) in {elapsed:.1f} s; collector "
            f"{collector_s / n * 1e6:.1f} µs/event, agents {agent_s / n * 1e6:.1f} µs/event "
            f"(process CPU); {batches:.0f} batches, {bulks:.0f} _bulk requests"
        )
        if node_s is not None:
            text += f"; OpenSearch node {node_s / n * 1e6:.1f} µs/event"
        if raw is not None and raw.exists() and spy_dir is not None:
            summary = summarize(raw)
            (spy_dir / f"collector-{number}.summary.txt").write_text(
                text + "\n" + summary + "\n", encoding="utf-8"
            )
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--agents", type=int, default=1, help="agents shipping the corpus")
    parser.add_argument("--detection", action="store_true", help="with the shipped detection rules")
    parser.add_argument("--py-spy", type=Path, dest="spy", help="directory for profiles")
    args = parser.parse_args()
    if args.spy is not None:
        args.spy.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="crm-audit-collectorcpu-"))
    work.chmod(0o755)
    lines = sample_lines(args.events)
    if args.agents < 1:
        parser.error("--agents must be at least 1")
    try:
        with opensearch_node(
            os.environ.get("OPENSEARCH_URL"), work / "node", os.environ, os.geteuid(), print
        ) as (url, _how):
            bench = Bench(
                url=url,
                os=client(url),
                work=work,
                pki=make_pki(work / "pki"),
                bin_dir=BIN,
                repo=REPO,
                child_env=dict(os.environ),
            )
            for agent_id in agent_ids(args.agents)[1:]:
                issue_agent(bench.pki, agent_id)
            for number in range(1, args.runs + 1):
                text = one_run(bench, lines, args.spy, number, args.agents, args.detection)
                print(text, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
