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
    if '"' not in text:  # the common case: nothing quoted
        return text.split(sep), True
    fields: list[str] = []
    buf: list[str] = []
    i, n = 0, len(text)
    ok = True
    # Scans with str.find between the characters that matter (separator, quote,
    # backslash) rather than char by char: this runs once per audit record.
    while True:
        if i < n and text[i] == '"':  # a quote opens a quoted section at a field's start
            i, closed = _quoted(text, i + 1, buf, backslash)
            ok = ok and closed
        # the unquoted rest of the field, up to the next separator (quotes are literal)
        end = text.find(sep, i)
        if end < 0:
            buf.append(text[i:])
            break
        buf.append(text[i:end])
        fields.append("".join(buf))
        buf = []
        i = end + len(sep)
    fields.append("".join(buf))
    return fields, ok


def _quoted(text: str, i: int, buf: list[str], backslash: bool) -> tuple[int, bool]:
    """Append the quoted section starting after its opening quote at `i` to `buf`;
    return the position after its closing quote (or the end) and whether it closed."""
    n = len(text)
    while True:
        quote = text.find('"', i)
        if backslash:
            escape = text.find("\\", i, quote if quote >= 0 else n)
            if 0 <= escape < n - 1:
                buf.append(text[i:escape])
                buf.append(text[escape + 1])
                i = escape + 2
                continue
        if quote < 0:
            buf.append(text[i:])
            return n, False
        buf.append(text[i:quote])
        if quote + 1 < n and text[quote + 1] == '"':
            buf.append('"')
            i = quote + 2
            continue
        return quote + 1, True


def quotes_balanced(data: bytes) -> bool:
    """True when `data` does not end inside a quoted CSV field (even number of `"`)."""
    return data.count(b'"') % 2 == 0
