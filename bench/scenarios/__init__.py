"""One module per kind of measurement; `ORDER` is the order results are reported in."""

from bench.scenarios.base import ORDER, TITLES, ScenarioResult, Shared

__all__ = ["ORDER", "TITLES", "ScenarioResult", "Shared"]
