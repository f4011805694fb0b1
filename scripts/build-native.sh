#!/usr/bin/env bash
# Builds and installs the compiled kernels (native/, module crm_audit_native: the agent's
# JSON-lines mapping and the collector's documents) into the virtualenv of PYTHON.
# Optional: agent and collector do the same work in Python without it (their reference),
# so a machine without cargo gets a one-line notice and exit 0 (NATIVE=required makes
# that an error, NATIVE=off skips the build; a build that fails where cargo is installed
# is an error). maturin comes from PyPI, the crates from
# crates.io (native/Cargo.lock pins them).
#   PYTHON=.venv/bin/python bash scripts/build-native.sh [pip arguments...]
set -euo pipefail
if [ "${NATIVE:-}" = off ]; then
  echo "build-native: NATIVE=off: the compiled kernels are not built" >&2
  exit 0
fi
src="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:?PYTHON must name the python of the virtualenv}"
# rustup installs into ~/.cargo/bin, which a non-login shell may not have on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "build-native: cargo not found: the compiled kernels (native/) are not built; agent and collector run in Python" >&2
  [ "${NATIVE:-}" = required ] && exit 1
  exit 0
fi
"$python" -m pip install --quiet --disable-pip-version-check "$@" "$src/native"
"$python" -c 'import crm_audit_native as n; print(f"build-native: crm_audit_native installed (collector kernel version {n.KERNEL_VERSION}, agent kernel version {n.AGENT_KERNEL_VERSION})")'
