"""The agent's process CPU per event under a real load, per thread and optionally
profiled (development tool, not a scenario; no OpenSearch).

    .venv/bin/python -m bench.agentcpu [--events 50000] [--runs 2] [--py-spy DIR]

Per run, as the agent-alone scenario sets it up (bench.scenarios.agent: the real
`crm-audit-agent run` with the bench's agent.yaml, a null collector in this process that
acks at once over real mTLS): after a warm-up line was acked, --events corpus lines are
appended and the clock runs until the null collector has acked them all. Printed per
run: the agent's process CPU per event (µs/event = CPU-s per million events), its CPU
per thread (read, feed, ship, gRPC's own threads, ...), its RSS once the warm-up line
was acked and its peak RSS (VmHWM) at the end.

With --py-spy DIR (`pip install py-spy` into the venv; a dev tool), every thread of the
agent is sampled while the events flow (non-blocking, idle samples left out, so the
samples show where CPU goes, by thread): DIR gets the raw collapsed stacks and a summary
per thread of own and inclusive samples per function. Sampling costs the agent some CPU:
compare runs made the same way.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.collectorcpu import summarize
from bench.corpus import append_all, sample_lines, warmup_line
from bench.pipeline import Bench, agent, make_pki, null_collector, run_scope
from bench.processes import start_py_spy, stop_py_spy
from bench.procstat import CpuMark, peak_rss_kib, rss_kib
from bench.scenarios.agent import _wait_acked

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
_TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of `pid`, keyed "tid name"."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "stat").read_text()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue  # the thread ended meanwhile
        fields = text[text.rindex(")") + 2 :].split()
        out[f"{task.name} {name}"] = (int(fields[11]) + int(fields[12])) / _TICKS
    return out


def by_thread(raw: Path) -> str:
    """Per thread of py-spy's raw output (`--threads`: the first frame names it)."""
    threads: dict[str, list[str]] = collections.defaultdict(list)
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, _count = line.rpartition(" ")
        head, _, rest = stack.partition(";")
        threads[head].append(f"{head};{rest} {_count}")
    total = sum(int(x.rsplit(" ", 1)[1]) for lines in threads.values() for x in lines)
    parts = []
    for head, lines in sorted(threads.items(), key=lambda kv: -len(kv[1])):
        part = raw.with_suffix(".part")
        part.write_text("\n".join(lines) + "\n", encoding="utf-8")
        n = sum(int(x.rsplit(" ", 1)[1]) for x in lines)
        parts.append(f"==== {head}: {n} of {total} samples\n{summarize(part, top=30)}")
        part.unlink()
    return "\n".join(parts)


def one_run(bench: Bench, lines: list[bytes], spy_dir: Path | None, number: int) -> str:
    with (
        run_scope(bench, "agentcpu", indices=False) as (_prefix, directory),
        null_collector(bench) as server,
    ):
        logs = directory / "logs"
        logs.mkdir()
        (logs / "warmup.jsonl").write_bytes(warmup_line("agentcpu"))
        with agent(bench, directory, str(logs / "*.jsonl"), server.port) as proc:
            _wait_acked(server, 1, proc, timeout=120)
            spy = raw = None
            if spy_dir is not None:
                raw = spy_dir / f"agent-{number}.txt"
                spy = start_py_spy(proc.pid, raw, "--threads")
                time.sleep(1.0)
            idle = rss_kib(proc.pid)
            before = thread_cpu(proc.pid)
            cpu = CpuMark.now(proc.pid)
            started = time.monotonic()
            append_all([logs / "app.jsonl"], [lines], 1000)
            done = _wait_acked(server, 1 + len(lines), proc, timeout=600)
            cpu_s = cpu.since()
            after = thread_cpu(proc.pid)
            peak = peak_rss_kib(proc.pid)
            stop_py_spy(spy)
    n = len(lines)
    per_thread = sorted(
        ((k, v - before.get(k, 0.0)) for k, v in after.items()), key=lambda kv: -kv[1]
    )
    text = [
        f"run {number}: {n} events in {done - started:.1f} s; agent {cpu_s / n * 1e6:.1f} "
        f"µs/event (process CPU), peak RSS {peak / 1024:.1f} MiB (before the load "
        f"{idle / 1024:.1f})"
    ]
    text += [f"  {k:28} {s / n * 1e6:6.1f} µs/event" for k, s in per_thread if s > 0]
    if raw is not None and raw.exists() and spy_dir is not None:
        (spy_dir / f"agent-{number}.summary.txt").write_text(
            "\n".join(text) + "\n" + by_thread(raw) + "\n", encoding="utf-8"
        )
    return "\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--py-spy", type=Path, dest="spy", help="directory for profiles")
    args = parser.parse_args()
    if args.spy is not None:
        args.spy.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="crm-audit-agentcpu-"))
    work.chmod(0o755)
    lines = sample_lines(args.events)
    try:
        bench = Bench(
            url="",
            os=None,  # type: ignore[arg-type]  # no OpenSearch: the null collector acks
            work=work,
            pki=make_pki(work / "pki"),
            bin_dir=BIN,
            repo=REPO,
            child_env=dict(os.environ),
        )
        for number in range(1, args.runs + 1):
            print(one_run(bench, lines, args.spy, number), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
