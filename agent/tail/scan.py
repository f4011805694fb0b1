"""Resolve a source's glob patterns minus its exclude patterns into sorted file paths."""

from __future__ import annotations

import fnmatch
import glob
from collections.abc import Iterable
from pathlib import Path


def resolve(patterns: Iterable[str], excludes: Iterable[str]) -> list[str]:
    """Regular files matching any pattern and no exclude, sorted by path.

    An exclude matches either the whole path or the file name, so `*.gz` works
    without knowing the directory.
    """
    excludes = tuple(excludes)
    found: set[str] = set()
    for pattern in patterns:
        # glob.glob, not Path.glob: patterns are absolute and may have wildcards anywhere.
        for path in glob.glob(pattern, recursive=True):  # noqa: PTH207
            name = Path(path).name
            if any(fnmatch.fnmatch(path, ex) or fnmatch.fnmatch(name, ex) for ex in excludes):
                continue
            if Path(path).is_file():
                found.add(path)
    return sorted(found)
