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
# The kernel is an abi3 wheel (one build serves every CPython >= 3.11), so it is built
# once per source and toolchain and reused by every later install (make venv, make
# install, an upgrade in place, the install tests) instead of a ~35 s LTO build each
# time. The key hashes every file the build reads and cargo's version.
key="$( (cd "$src/native" && sha256sum Cargo.toml Cargo.lock pyproject.toml src/*.rs && cargo --version) | sha256sum | cut -c1-16)"
cache="$src/native/target/wheel-cache/$key"
if ! compgen -G "$cache/crm_audit_native-*.whl" >/dev/null; then
  mkdir -p "$src/native/target/wheel-cache"
  building="$(mktemp -d "$src/native/target/wheel-cache/building.XXXXXX")"
  trap 'rm -rf "$building"' EXIT
  "$python" -m pip wheel --quiet --disable-pip-version-check --no-deps "$@" -w "$building" "$src/native"
  # Renamed into place whole, so a concurrent install sees a complete wheel or none;
  # when another build got there first, its wheel is used and this one dropped.
  mv -T "$building" "$cache" 2>/dev/null || true
fi
wheel="$(compgen -G "$cache/crm_audit_native-*.whl" | head -n 1)"
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$@" "$wheel"
"$python" -c 'import crm_audit_native as n; print(f"build-native: crm_audit_native installed (collector kernel version {n.KERNEL_VERSION}, agent kernel version {n.AGENT_KERNEL_VERSION})")'
