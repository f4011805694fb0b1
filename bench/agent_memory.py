"""What the agent's imports cost in memory and start-up time (development tool).

    .venv/bin/python -m bench.agent_memory [--config config/agent.yaml]

Each measurement runs in a fresh interpreter:
- per module: the RSS it adds to a bare interpreter when imported alone (its own
  dependencies included, so rows overlap) and its cumulative `-X importtime`; then the
  RSS it adds when imported in this order after the rows above it (what it costs the
  agent beyond what the others already loaded: the rows add up to `agent.runtime`);
- the agent: RSS after `import agent.runtime`, then after loading `--config` and building
  its sources' parsers (what `crm-audit-agent run` holds before reading a line), and
  which optional modules that pulled in.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config/agent.yaml")
    args = parser.parse_args()
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
