"""A report never takes a refused request for an empty answer.

Against the real security plugin (the analyst role and its report):
tests/integration/test_security_plugin.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from collector.index import Response
from collector.report.errors import ReportDataError
from collector.report.query import Queries


def answering(status: int, answer: Any) -> Any:
    def request(
        method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None
    ) -> Response:
        return Response(status, answer)

    return request


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_get_is_an_error(status: int) -> None:
    refused = {
        "error": {
            "type": "security_exception",
            "reason": "no permissions for [cluster:monitor/state] and User [name=soc-analyst-1]",
        },
        "status": status,
    }
    with pytest.raises(ReportDataError) as caught:
        Queries(answering(status, refused)).get("/_cat/plugins", {"format": "json"})
    assert str(caught.value) == (
        f"GET /_cat/plugins: HTTP {status} "
        "no permissions for [cluster:monitor/state] and User [name=soc-analyst-1]"
    )


@pytest.mark.parametrize(("status", "body"), [(200, [{"component": "x"}]), (404, {"error": "x"})])
def test_other_answers_are_returned(status: int, body: Any) -> None:
    assert Queries(answering(status, body)).get("/x") == (status, body)
