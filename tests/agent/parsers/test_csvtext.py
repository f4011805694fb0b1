"""split_csv: examples, and agreement with a char-by-char reference on any text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.parsers.csvtext import split_csv


def reference_split(text: str, sep: str, backslash: bool) -> tuple[list[str], bool]:
    """The straightforward char-by-char reading of the rules in split_csv's docstring
    (the implementation before it scanned with str.find)."""
    fields: list[str] = []
    buf: list[str] = []
    i, n, ok, at_start = 0, len(text), True, True
    while i < n:
        ch = text[i]
        if ch == '"' and at_start:
            i += 1
            closed = False
            while i < n:
                ch = text[i]
                if backslash and ch == "\\" and i + 1 < n:
                    buf.append(text[i + 1])
                    i += 2
                    continue
                if ch == '"':
                    if i + 1 < n and text[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    closed = True
                    break
                buf.append(ch)
                i += 1
            ok = ok and closed
            at_start = False
            continue
        if ch == sep:
            fields.append("".join(buf))
            buf = []
            at_start = True
            i += 1
            continue
        buf.append(ch)
        at_start = False
        i += 1
    fields.append("".join(buf))
    return fields, ok


def test_examples() -> None:
    assert split_csv("") == ([""], True)
    assert split_csv("a,,b,") == (["a", "", "b", ""], True)
    assert split_csv('SESSION,1,"INSERT INTO t VALUES (\'a,b\', ""q"")",x') == (
        ["SESSION", "1", "INSERT INTO t VALUES ('a,b', \"q\")", "x"],
        True,
    )
    assert split_csv('a"b,"c') == (['a"b', "c"], False)  # a quote mid-field is literal
    assert split_csv('"ab"cd,e') == (["abcd", "e"], True)
    assert split_csv('"a\\"b",c', backslash=True) == (['a"b', "c"], True)
    assert split_csv('"a\\"b",c') == (['a\\b"', "c"], True)  # no escapes: closes early
    assert split_csv('"ends\\', backslash=True) == (["ends\\"], False)


@given(
    st.text(alphabet=st.sampled_from(list('ab,;"\\ \n\u00e9')), max_size=40),
    st.sampled_from([",", ";"]),
    st.booleans(),
)
def test_agrees_with_the_char_by_char_reference(text: str, sep: str, backslash: bool) -> None:
    assert split_csv(text, sep, backslash) == reference_split(text, sep, backslash)
