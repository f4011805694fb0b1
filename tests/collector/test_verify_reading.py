"""verify's JSON decoder (`collector.verify.reading.FastJson`) reads every answer to the
same values as the stdlib decoder opensearch-py uses otherwise: what an edited document
may hold included (integers beyond 64 bits, NaN, lone surrogates, huge exponents)."""

from __future__ import annotations

import json

import pytest
from opensearchpy.exceptions import SerializationError

from collector.verify.reading import FastJson


@pytest.mark.parametrize(
    "text",
    [
        '{"hits": {"hits": [{"_id": "a:b:1", "_source": {"event": {"sequence": 1}}}]}}',
        '{"a": 123456789012345678901234567890}',
        '{"a": -9223372036854775809, "b": 18446744073709551616}',
        '{"a": 1.0, "b": 0.1, "c": 1e-7, "d": 2.5e300}',
        '{"a": NaN, "b": Infinity}',
        '{"a": 1e400}',
        '{"a": "\\ud800"}',
        '{"a": "caf\\u00e9 \u00fc \U0001f600"}',
        '{"a": 1, "a": 2}',
    ],
)
def test_same_values_as_the_stdlib(text: str) -> None:
    mine = FastJson().loads(text)
    theirs = json.loads(text)
    assert repr(mine) == repr(theirs)  # repr: int vs float and NaN told apart


def test_malformed_is_still_an_error() -> None:
    with pytest.raises(SerializationError):
        FastJson().loads('{"a": ')
