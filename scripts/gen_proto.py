"""Regenerate the Python code for proto/v1/*.proto (run as `make proto`).

Output goes beside the .proto files (or into --out DIR, which the staleness test
uses to compare a fresh generation against what is committed).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_FILES = sorted((ROOT / "proto" / "v1").glob("*.proto"))
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    # mypy-protobuf installs its protoc plugins next to the interpreter, which may
    # not be on PATH when the venv is not activated.
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: install the dev extras (pip install -e '.[dev]')")
    return found


def generate(out_root: Path) -> list[Path]:
    """Generate into out_root/proto/v1/ and return the generated files."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{ROOT}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--mypy_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            *[str(p.relative_to(ROOT)) for p in PROTO_FILES],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        produced = []
        for f in sorted((Path(tmp) / "proto" / "v1").iterdir()):
            if f.name.endswith(GENERATED_SUFFIXES):
                dest = out_root / "proto" / "v1" / f.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dest)
                produced.append(dest)
        return produced


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT, help="root to write proto/v1/ under")
    args = parser.parse_args()
    for path in generate(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
