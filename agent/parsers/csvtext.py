"""CSV fields of one record, and whether a record's quotes are balanced. Pure.

The `csv` module is not used: audit formats quote only some fields, some escape with a
backslash, and a record must be split even when it is damaged (a parser reports what
it could read rather than raising).
"""

from __future__ import annotations


def split_csv(text: str, sep: str = ",", backslash: bool = False) -> tuple[list[str], bool]:
    """Fields of one CSV record (quotes removed, `""` → `"`) and whether it was well formed.

    A quote opens a quoted section only at the start of a field; with `backslash` a
    `\\"` inside quotes is an escaped quote too. An unterminated quote makes the rest
    of the text the last field and returns False.
    """
    fields: list[str] = []
    buf: list[str] = []
    i, n = 0, len(text)
    ok = True
    at_start = True
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
            if not closed:
                ok = False
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


def quotes_balanced(data: bytes) -> bool:
    """True when `data` does not end inside a quoted CSV field (even number of `"`)."""
    return data.count(b'"') % 2 == 0
