"""`python -m bench` (`make bench`): run the scenarios, print a table, write JSON.

    python -m bench --out results.json [--quick] [--runs N] [--only e2e,peer]
                    [--readme README.md] [--keep]

OpenSearch: ``$OPENSEARCH_URL`` when set, else an embedded single node started on a free
loopback port under a temporary directory (from the distribution `make opensearch-dist`
fetched) and stopped at the end. Everything started is stopped, every index created is
deleted. The only module that reads the environment and the machine's real paths.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import machine, report
from bench.corpus import padded_lines, sample_lines, split_round_robin
from bench.pipeline import Bench, make_pki, rsyslog_server, syslog_ng_version
from bench.processes import BenchError
from bench.rounds import Contender, run_rounds
from bench.scenarios import ORDER, ScenarioResult, Shared
from bench.scenarios import agent as agent_scenario
from bench.scenarios import ceiling as ceiling_scenario
from bench.scenarios import detection as detection_scenario
from bench.scenarios import e2e as e2e_scenario
from bench.scenarios import integrity as integrity_scenario
from bench.scenarios import latency as latency_scenario
from bench.scenarios import parsers as parsers_scenario
from bench.scenarios import peer as peer_scenario
from bench.scenarios import verify as verify_scenario
from bench.scenarios.base import timed
from bench.search import client, local_node_pid, opensearch_node, version
from bench.sizes import FULL, QUICK, Sizes
from bench.stats import median_of_runs, ratio

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SAMPLES = REPO / "tests" / "agent" / "parsers" / "samples"
# Scenarios that share the unmeasured preparation run (JVM warm-up, the ceiling's documents).
PREPARED_SCENARIOS = {"ceiling", "e2e", "latency", "peer", "syslog-ng"}
OPENSEARCH_SCENARIOS = PREPARED_SCENARIOS | {"integrity", "verify", "detection"}
Say = Callable[[str], None]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="crm-audit benchmarks (see bench/__init__.py)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "var" / "bench" / "results.json",
        help="results JSON (default var/bench/results.json)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a check, not numbers")
    parser.add_argument("--runs", type=int, help="measured runs per scenario (default 3; quick 2)")
    parser.add_argument(
        "--only",
        type=lambda s: [p.strip() for p in s.split(",") if p.strip()],
        default=list(ORDER),
        help=f"comma-separated subset of {','.join(ORDER)}",
    )
    parser.add_argument("--readme", type=Path, help="also rewrite this file's results section")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--verify-events",
        type=int,
        metavar="N",
        help="events the verify scenario ships and verifies (default 100000; quick 2000)",
    )
    return parser


def _say_from(start: float) -> Say:
    def say(message: str) -> None:
        print(f"[bench {time.monotonic() - start:6.0f}s] {message}", file=sys.stderr, flush=True)

    return say


def _git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return rev + ("-dirty" if dirty else "")


def _rsyslogd() -> str | None:
    found = shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin:/sbin")
    return found


def _syslog_ng_root() -> Path | None:
    """The syslog-ng tree bench/install-syslog-ng.sh unpacks, when it is there and runs."""
    cache = os.environ.get("CRM_AUDIT_CACHE")
    base = Path(cache) if cache else Path.home() / ".cache" / "crm-audit"
    root = base / "syslog-ng" / "root"
    return root if syslog_ng_version(root) is not None else None


def _rsyslog_version(binary: str | None) -> str | None:
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    words = out.split()
    return words[1].rstrip(",") if len(words) > 1 else None


def _package_version() -> str:
    try:
        return metadata.version("crm-audit")
    except metadata.PackageNotFoundError:
        return "?"


def _failure(result: ScenarioResult, exc: BaseException, say: Say) -> None:
    result.status = "failed"
    result.reason = " ".join(str(exc).split())[:2000] or type(exc).__name__
    say(f"{result.name} FAILED: {str(exc)[:4000]}")


def run_scenarios(
    bench: Bench, sizes: Sizes, selected: Sequence[str], say: Say
) -> tuple[dict[str, ScenarioResult], dict[str, Any]]:
    """Run the selected scenarios (in an order that lets them share work)."""
    results: dict[str, ScenarioResult] = {}
    extra: dict[str, Any] = {}
    shared = Shared()
    chunk = sizes.write_chunk_lines
    corpus = sample_lines(
        max(
            sizes.e2e_events,
            sizes.agent_events,
            sizes.integrity_events,
            sizes.parser_lines,
            sizes.verify_events,
        )
    )
    e2e_lines = corpus[: sizes.e2e_events]

    if PREPARED_SCENARIOS & set(selected):
        # Unmeasured: warms the JVM up, and its documents are the ceiling's.
        say(f"preparation: one unmeasured end-to-end run of {len(e2e_lines):,} events")
        try:
            run, shared.exported = e2e_scenario.run_once(bench, e2e_lines, chunk, export=True)
            extra["preparation_run"] = run
            say(f"preparation: {run['events_per_s']:,.0f} events/s (not reported)")
        except Exception as exc:  # noqa: BLE001 - recorded; the scenarios that need it fail
            say(f"preparation run failed: {exc}")
            extra["preparation_error"] = str(exc)[:2000]

    # The shipping scenarios are measured in rounds (bench.rounds): each of these sets
    # its scenario up and returns how to measure one run, or None when it is skipped.
    def ceiling(result: ScenarioResult) -> Contender | None:
        if shared.exported is None:
            raise BenchError("no documents: the preparation run failed")
        exported = shared.exported
        grid, best = ceiling_scenario.probe(
            bench,
            exported,
            probe_docs=sizes.ceiling_probe_docs,
            bulk_sizes=sizes.ceiling_bulk_sizes,
            concurrency=sizes.ceiling_concurrency,
            say=say,
        )
        result.info["grid"] = grid
        result.info["best"] = best
        return Contender(
            result,
            lambda: ceiling_scenario.run_once(
                bench, exported, exported.docs, best["bulk_size"], best["concurrency"]
            ),
            lambda run: f"{run['docs_per_s']:,.0f} docs/s",
            warm=False,  # the probes warmed it
        )

    def e2e(result: ScenarioResult) -> Contender | None:
        return Contender(
            result,
            lambda: e2e_scenario.run_once(bench, e2e_lines, chunk)[0],
            lambda run: f"{run['events_per_s']:,.0f} events/s",
        )

    def agent(result: ScenarioResult) -> None:
        lines = corpus[: sizes.agent_events]
        result.runs = agent_scenario.measure(bench, [lines], chunk, sizes.runs, say)

    def latency(result: ScenarioResult) -> None:
        result.runs = latency_scenario.measure(
            bench,
            corpus,
            rate=sizes.latency_rate,
            duration_s=sizes.latency_duration_s,
            probe_every=sizes.latency_probe_every,
            runs=sizes.runs,
            say=say,
        )

    def peer_contender(result: ScenarioResult, peer: str) -> Contender | None:
        found = bench.rsyslogd if peer == "rsyslog" else bench.syslog_ng
        if found is None:
            result.status = "skipped"
            result.reason = (
                "rsyslogd not installed (bash bench/install-rsyslog.sh as root)"
                if peer == "rsyslog"
                else "syslog-ng not unpacked (bash bench/install-syslog-ng.sh as root)"
            )
            return None
        try:
            rsyslog_server(bench.url)
        except BenchError as exc:
            result.status, result.reason = "skipped", str(exc)
            return None
        return Contender(
            result,
            lambda: peer_scenario.run_once(bench, e2e_lines, chunk, peer),
            lambda run: f"{run['events_per_s']:,.0f} events/s, {run['cpu_s_per_m']:.1f} CPU-s/M",
        )

    def peer(result: ScenarioResult) -> Contender | None:
        return peer_contender(result, "rsyslog")

    def syslog_ng(result: ScenarioResult) -> Contender | None:
        return peer_contender(result, "syslog-ng")

    def scaling(result: ScenarioResult) -> None:
        cases = []
        for line_bytes in sizes.scaling_line_bytes:
            lines = padded_lines(sizes.scaling_events, line_bytes)
            for files in sizes.scaling_files:
                runs = agent_scenario.measure(
                    bench,
                    split_round_robin(lines, files),
                    chunk,
                    sizes.runs,
                    say,
                    what=f"scaling-{files}f-{line_bytes}b",
                )
                cases.append(
                    {
                        "files": files,
                        "line_bytes": line_bytes,
                        "median": median_of_runs(runs),
                        "runs": runs,
                    }
                )
        result.info["cases"] = cases

    def parsers(result: ScenarioResult) -> None:
        directory = bench.work / "parsers"
        directory.mkdir(exist_ok=True)
        cases = parsers_scenario.all_cases(SAMPLES, corpus, sizes.parser_lines)
        key_file = parsers_scenario.write_key(directory)
        result.info["cases"] = parsers_scenario.measure(cases, key_file, sizes.runs, say)

    def integrity(result: ScenarioResult) -> None:
        result.runs, result.info["ingest"] = integrity_scenario.measure(
            bench, corpus[: sizes.integrity_events], sizes.integrity_batch, sizes.runs, say
        )

    def verify(result: ScenarioResult) -> None:
        result.runs, result.info["ingest"] = verify_scenario.measure(
            bench, corpus[: sizes.verify_events], chunk, sizes.runs, say
        )

    def detection(result: ScenarioResult) -> None:
        result.runs = detection_scenario.measure(
            bench,
            incidents=sizes.detection_incidents,
            rate=sizes.detection_rate,
            interval_s=sizes.detection_interval_s,
            spacing_s=sizes.detection_spacing_s,
            runs=sizes.runs,
            say=say,
        )

    shipping: dict[str, Callable[[ScenarioResult], Contender | None]] = {
        "ceiling": ceiling,
        "e2e": e2e,
        "peer": peer,
        "syslog-ng": syslog_ng,
    }

    def shipping_rounds() -> None:
        contenders = []
        for name in (name for name in ORDER if name in shipping and name in selected):
            result = ScenarioResult(name)
            results[name] = result
            say(f"scenario {name} (set-up)")
            with timed(result):
                try:
                    contender = shipping[name](result)
                except Exception as exc:  # noqa: BLE001 - one failed scenario must not end the rest
                    _failure(result, exc, say)
                    contender = None
            if contender is not None:
                contenders.append(contender)
        say("shipping scenarios in rounds: " + ", ".join(c.result.name for c in contenders))
        run_rounds(
            contenders,
            runs=sizes.runs,
            warmups=sizes.shipping_warmups,
            say=say,
            fail=_failure,
        )
        for name in shipping:
            if name in results:
                results[name].finish()

    scenarios: dict[str, Callable[[ScenarioResult], None]] = {
        "agent": agent,
        "latency": latency,
        "scaling": scaling,
        "parsers": parsers,
        "integrity": integrity,
        "verify": verify,
        "detection": detection,
    }
    for name in ORDER:
        if name not in selected or name in results:
            continue
        if name in shipping:
            shipping_rounds()
            continue
        result = ScenarioResult(name)
        say(f"scenario {name}")
        with timed(result):
            try:
                scenarios[name](result)
            except Exception as exc:  # noqa: BLE001 - one failed scenario must not end the rest
                _failure(result, exc, say)
        results[name] = result.finish()
    return results, extra


def comparisons(results: dict[str, ScenarioResult]) -> dict[str, Any]:
    """Ratios between scenarios, from their medians (None where a side is missing)."""

    def median(name: str, key: str) -> float | None:
        result = results.get(name)
        if result is None or result.status != "ok":
            return None
        return result.median.get(key)

    def total(name: str, key: str) -> float | None:
        """The shipper's CPU per event plus the OpenSearch node's in the same runs: what
        the two shared cores pay per event, which bounds the events/s."""
        shipper, node = median(name, key), median(name, "opensearch_cpu_s_per_m")
        return None if shipper is None or node is None else shipper + node

    return {
        "e2e_to_ceiling": ratio(median("e2e", "events_per_s"), median("ceiling", "docs_per_s")),
        "peer": {
            "events_per_s": ratio(median("e2e", "events_per_s"), median("peer", "events_per_s")),
            "cpu_per_event": ratio(
                median("e2e", "pipeline_cpu_s_per_m"), median("peer", "cpu_s_per_m")
            ),
            "agent_cpu_per_event": ratio(
                median("e2e", "agent_cpu_s_per_m"), median("peer", "cpu_s_per_m")
            ),
            "with_opensearch_cpu_per_event": ratio(
                total("e2e", "pipeline_cpu_s_per_m"), total("peer", "cpu_s_per_m")
            ),
        },
        "syslog_ng": {
            "events_per_s": ratio(
                median("e2e", "events_per_s"), median("syslog-ng", "events_per_s")
            ),
            "cpu_per_event": ratio(
                median("e2e", "pipeline_cpu_s_per_m"), median("syslog-ng", "cpu_s_per_m")
            ),
            "agent_cpu_per_event": ratio(
                median("e2e", "agent_cpu_s_per_m"), median("syslog-ng", "cpu_s_per_m")
            ),
            "with_opensearch_cpu_per_event": ratio(
                total("e2e", "pipeline_cpu_s_per_m"), total("syslog-ng", "cpu_s_per_m")
            ),
        },
    }


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    unknown = [name for name in args.only if name not in ORDER]
    if unknown or not args.only:
        print(
            f"--only: unknown scenario(s) {unknown}; choose from {','.join(ORDER)}", file=sys.stderr
        )
        return 2
    if args.runs is not None and args.runs < 1:
        print("--runs: must be >= 1", file=sys.stderr)
        return 2
    if args.verify_events is not None and args.verify_events < 1:
        print("--verify-events: must be >= 1", file=sys.stderr)
        return 2
    sizes = (QUICK if args.quick else FULL).with_runs(args.runs)
    if args.verify_events is not None:
        sizes = replace(sizes, verify_events=args.verify_events)
    start = time.monotonic()
    say = _say_from(start)
    started_at = dt.datetime.now(dt.UTC)
    rsyslogd = _rsyslogd()
    syslog_ng_root = _syslog_ng_root()
    output: dict[str, Any] = {
        "schema": 1,
        "started_at": started_at.isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine.describe(),
        "sizes": sizes.as_json(),
        "only": list(args.only),
    }
    work = Path(tempfile.mkdtemp(prefix="crm-audit-bench-"))
    # The embedded node's user (crm-audit-os when run as root) must reach its home.
    work.chmod(0o755)
    say(f"scratch directory {work}; {output['mode']} size, {sizes.runs} runs per scenario")
    exit_code = 0
    try:
        needs_opensearch = bool(OPENSEARCH_SCENARIOS & set(args.only))
        node = (
            opensearch_node(
                os.environ.get("OPENSEARCH_URL"), work / "node", os.environ, os.geteuid(), say
            )
            if needs_opensearch
            else contextlib.nullcontext(("http://127.0.0.1:9", "not used"))
        )
        with node as (url, how):
            os_client = client(url)
            bench = Bench(
                url=url,
                os=os_client,
                work=work,
                pki=make_pki(work / "pki"),
                bin_dir=BIN,
                repo=REPO,
                child_env=dict(os.environ),
                rsyslogd=rsyslogd,
                syslog_ng=syslog_ng_root,
                node_pid=local_node_pid(os_client) if needs_opensearch else None,
            )
            output["software"] = {
                "opensearch": version(os_client) if needs_opensearch else None,
                "opensearch_how": how,
                "rsyslog": _rsyslog_version(rsyslogd),
                "syslog_ng": syslog_ng_version(syslog_ng_root) if syslog_ng_root else None,
                "crm_audit": f"{_package_version()} ({_git_revision()})",
            }
            results, extra = run_scenarios(bench, sizes, args.only, say)
            os_client.close()
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130
    except (BenchError, OSError) as exc:
        say(f"benchmark could not run: {exc}")
        return 1
    except Exception as exc:  # noqa: BLE001 - e.g. the embedded node failed to start
        say(f"benchmark could not run: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    output.update(extra)
    output["scenarios"] = {name: result.as_json() for name, result in results.items()}
    output["comparisons"] = comparisons(results)
    output["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    output["duration_s"] = round(time.monotonic() - start, 1)
    output["machine"]["loadavg_at_end"] = machine.loadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_clean(output), indent=2) + "\n", encoding="utf-8")
    print(report.render_table(_clean(output)))
    print(f"results: {args.out}")
    if args.readme is not None:
        report.update_file(args.readme, _clean(output))
        print(f"{args.readme}: results section updated")
    if any(result.status == "failed" for result in results.values()):
        exit_code = 1
    return exit_code
