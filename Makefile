# crm-audit developer entry points. The two that matter most:
#   make demo   — full pipeline on this machine (Ctrl-C to stop; ONCE=1 exits after the summary)
#   make test   — ruff, mypy and pytest (unit + integration against real OpenSearch)
# Both install what a new machine lacks (system packages, venv, Python deps, OpenSearch).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# rustup installs cargo into ~/.cargo/bin, which a non-login shell (CI) may not have on
# PATH: the kernel's build, its Rust tests and pytest's check for cargo all look there.
export PATH := $(PATH):$(HOME)/.cargo/bin

.PHONY: all system-deps venv proto lint native-test test unit demo opensearch-dist opensearch-dist-security clean bench

all: test

system-deps:
	@bash scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The compiled kernels of agent and collector (native/, optional: see scripts/build-native.sh).
NATIVE_STAMP := $(VENV)/.native
$(NATIVE_STAMP): $(STAMP) native/Cargo.toml native/Cargo.lock native/pyproject.toml $(wildcard native/src/*.rs)
	PYTHON=$(PY) bash scripts/build-native.sh
	@touch $(NATIVE_STAMP)

venv: $(STAMP) $(NATIVE_STAMP)

proto: venv
	$(PY) scripts/gen_proto.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Fetch the OpenSearch distribution and plugins once (cached in ~/.cache/crm-audit).
opensearch-dist: system-deps venv
	$(VENV)/bin/crm-audit opensearch fetch

# The security-plugin tests run 2.19.4 + opensearch-security 2.19.4.0 (the newest 2.19
# security zip Maven Central serves). Fetched here so a download problem shows before
# the tests; if it fails, that test module is skipped with the reason.
opensearch-dist-security: system-deps venv
	@$(VENV)/bin/crm-audit opensearch fetch --version 2.19.4 --plugin opensearch-security \
	  || echo "make test: opensearch-security 2.19.4.0 not fetched; tests/integration/test_security_plugin.py will be skipped" >&2

# pytest exits 5 when it collected no test: for this suite that means something is
# broken (a bad path, an import-time skip), so it is reported as a failure, not green.
#
# pytest runs in one worker process per CPU, at most 4 (pytest-xdist): most tests wait on
# real processes, so one core sits idle in a serial run. Each worker starts its own
# OpenSearch node (tests/conftest.py); a test file stays whole on one worker
# (--dist loadfile), so a module's fixtures start once. PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ "$$n" -gt 4 ] && n=4; echo $$n)
test: system-deps venv lint native-test opensearch-dist opensearch-dist-security
	@$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	  exit $$rc

# The compiled kernels' own Rust unit tests, where cargo is installed (the Python tests
# compare them with the Python reference: tests/collector/test_native.py,
# tests/agent/test_native_mapping.py).
native-test:
	@if command -v cargo >/dev/null 2>&1; then cd native && cargo test --release --quiet; \
	else echo "make test: cargo not found; native/ unit tests not run" >&2; fi

unit: venv
	$(VENV)/bin/pytest -m "not integration" $(PYTEST_ARGS)

demo: system-deps venv opensearch-dist
	$(PY) scripts/demo.py $(if $(ONCE),--once,)

# Benchmarks (bench/, README "Benchmarks"): a table on stdout, JSON to --out (default
# var/bench/results.json); BENCH_ARGS="--quick" for a tiny check run, "--readme README.md"
# to rewrite the README's results section. The rsyslog peer is installed when missing
# (needs root); without it that scenario is reported as skipped. So is the syslog-ng peer
# (bench/install-syslog-ng.sh unpacks it privately: Debian's package conflicts with rsyslog).
bench: system-deps venv opensearch-dist
	@bash bench/install-rsyslog.sh || echo "make bench: rsyslog unavailable; the peer scenario will be skipped" >&2
	@bash bench/install-syslog-ng.sh || echo "make bench: syslog-ng unavailable; the syslog-ng scenario will be skipped" >&2
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache

# docs/config-reference.md from the pydantic config models (a test fails when it is stale).
.PHONY: config-reference install
config-reference: venv
	$(PY) scripts/gen_config_reference.py

# Install as a system service (docs/operations.md): PREFIX venv, the crm-audit user,
# /etc/crm-audit, /var/lib/crm-audit, systemd units. Run as root; idempotent.
# DESTDIR=/tmp/pkgroot lays the files out for packaging (no user, no chown, no systemctl).
# ROLE=agent on a CRM host (the agent's dependencies only: no OpenSearch client, no
# plotting libraries), ROLE=collector on the central host, ROLE=all (default) for both.
PREFIX ?= /opt/crm-audit
DESTDIR ?=
ROLE ?= all
install:
	ROLE="$(ROLE)" PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" PYTHON="$(PYTHON)" bash scripts/install.sh
