"""crm-audit agent: tails CRM audit logs, normalizes them and ships them to the collector.

Public entry points (everything else is internal and may change):

    from agent import Agent, Clock, load_config
    config = load_config(Path("agent.yaml"))      # raises ConfigError (one line per problem)
    Agent(config, clock=Clock(time.time_ns, time.monotonic), hostname=..., version=...).run(stop)

`run(stop)` blocks until the `threading.Event` `stop` is set, then drains and returns.
The command line front end is `crm-audit-agent run|check -c agent.yaml` (agent/cli.py).
"""

from typing import TYPE_CHECKING, Any

from agent.config import AgentConfig, load_config
from agent.errors import AgentError, CheckpointError, ConfigError, ShipError

if TYPE_CHECKING:
    from agent.runtime import Agent, Clock


def __getattr__(name: str) -> Any:
    # Lazy: importing grpc is deferred so that the CLI can configure its logging first.
    if name in ("Agent", "Clock"):
        from agent import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'agent' has no attribute {name!r}")


__all__ = [
    "Agent",
    "AgentConfig",
    "AgentError",
    "CheckpointError",
    "Clock",
    "ConfigError",
    "ShipError",
    "load_config",
]
