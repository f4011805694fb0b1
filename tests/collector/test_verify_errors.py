"""`crm-audit verify` says why OpenSearch could not be read, not only the status.

Against the real secured node (a foreign CA, an analyst's role):
tests/integration/test_security_plugin.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from collector.index import Response
from collector.verify import Verifier, VerifyError


def answering(response: Response) -> Any:
    def request(
        method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None
    ) -> Response:
        return response

    return request


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            Response(
                0, {"error": "ConnectionError([SSL: CERTIFICATE_VERIFY_FAILED] verify failed)"}
            ),
            "HTTP 0 (ConnectionError([SSL: CERTIFICATE_VERIFY_FAILED] verify failed))",
        ),
        (
            Response(
                403,
                {
                    "error": {
                        "type": "security_exception",
                        "reason": "no permissions for [indices:data/read/search] and User [name=a]",
                    },
                    "status": 403,
                },
            ),
            "HTTP 403 (no permissions for [indices:data/read/search] and User [name=a])",
        ),
        (Response(503, {"error": {"type": "unavailable_shards_exception"}}), "HTTP 503 "),
        (Response(500, "plain text"), "HTTP 500"),
    ],
)
def test_a_failed_read_names_its_reason(response: Response, message: str) -> None:
    with pytest.raises(VerifyError) as caught:
        Verifier(answering(response), "p", lambda _agent: {}).run(["a1"])
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_long_reason_is_cut() -> None:
    response = Response(0, {"error": "x" * 1000})
    with pytest.raises(VerifyError) as caught:
        Verifier(answering(response), "p", lambda _agent: {}).run(["a1"])
    assert len(str(caught.value)) < 400
