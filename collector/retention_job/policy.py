"""A retention class's phases, read from the class's ISM policy file.

One file says what retention is, whoever enforces it: ISM applies it where the cluster
has the plugin, the collector's retention job (`collector.retention_job.job`) reads the
same ages here. The warm age is the ``min_index_age`` of the transition into the first
state whose actions include ``read_only`` or ``force_merge``; the delete age that of the
transition into the first state whose actions include ``delete``. ISM counts those ages
from index creation; the collector job counts them from the event time of the newest
document in the index (what regulations mean by "kept N years").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_AGE = re.compile(r"^(\d+(?:\.\d+)?)(d|h|m|s|ms)$")
_UNIT_DAYS = {"d": 1.0, "h": 1 / 24, "m": 1 / 1440, "s": 1 / 86400, "ms": 1 / 86_400_000}
DAY_NS = 86_400 * 1_000_000_000
_WARM_ACTIONS = ("read_only", "force_merge")


@dataclass(frozen=True)
class Phases:
    """Ages in days after which an index goes read-only (warm) and is deleted."""

    warm_days: float | None  # None: never made read-only
    delete_days: float | None  # None: never deleted
    force_merge_segments: int = 1

    def describe(self) -> str:
        warm = "never" if self.warm_days is None else f"{self.warm_days:g}d"
        delete = "never" if self.delete_days is None else f"{self.delete_days:g}d"
        return f"warm (read-only, force-merge) after {warm}, delete after {delete}"


def age_days(value: str) -> float:
    """An ISM age (``30d``, ``12h``) in days, or `ValueError`."""
    match = _AGE.match(value.strip())
    if not match:
        raise ValueError(f"not an ISM age (e.g. 30d, 12h): {value!r}")
    return float(match[1]) * _UNIT_DAYS[match[2]]


def _into(states: list[Any], wanted: set[str]) -> float | None:
    ages: list[float] = []
    for state in states:
        if not isinstance(state, Mapping):
            continue
        for transition in state.get("transitions", []) or []:
            if isinstance(transition, Mapping) and transition.get("state_name") in wanted:
                conditions = transition.get("conditions") or {}
                age = conditions.get("min_index_age") if isinstance(conditions, Mapping) else None
                ages.append(age_days(str(age)) if age is not None else 0.0)
    return min(ages) if ages else None


def _states_with(states: list[Any], actions: tuple[str, ...]) -> set[str]:
    return {
        str(state.get("name"))
        for state in states
        if isinstance(state, Mapping)
        and any(
            isinstance(action, Mapping) and any(name in action for name in actions)
            for action in state.get("actions", []) or []
        )
    }


def phases_of(policy: Mapping[str, Any]) -> Phases:
    """The phases of an ISM policy body (``{"policy": {...}}`` or the inner object).

    A state that acts without a transition into it (the default state) counts as age 0.
    Raises `ValueError` for an age ISM would not accept either.
    """
    inner = policy.get("policy", policy)
    states = list(inner.get("states", []) or []) if isinstance(inner, Mapping) else []
    default = inner.get("default_state") if isinstance(inner, Mapping) else None
    segments = 1
    for state in states:
        for action in state.get("actions", []) or [] if isinstance(state, Mapping) else []:
            merge = action.get("force_merge") if isinstance(action, Mapping) else None
            if isinstance(merge, Mapping) and isinstance(merge.get("max_num_segments"), int):
                segments = int(merge["max_num_segments"])

    def age(wanted: set[str]) -> float | None:
        if not wanted:
            return None
        if default in wanted:
            return 0.0
        return _into(states, wanted)

    return Phases(
        warm_days=age(_states_with(states, _WARM_ACTIONS)),
        delete_days=age(_states_with(states, ("delete",))),
        force_merge_segments=max(segments, 1),
    )
