#!/usr/bin/env bash
# Install crm-audit as a system service (`make install`; see docs/operations.md).
#
#   PREFIX      /opt/crm-audit   virtualenv with the package (bin/crm-audit-agent, ...),
#                                README.md, share/crm-audit/ (example configs, OpenSearch
#                                templates and policies, Dashboards objects, docs)
#   /etc/crm-audit               configs, 0750 root:crm-audit; the examples are copied
#                                only when absent, so re-running never touches yours
#   /var/lib/crm-audit           state (agent/ and collector/, 0700 crm-audit)
#   /etc/systemd/system          crm-audit-agent.service, crm-audit-collector.service,
#                                crm-audit-retention.service + .timer (secured clusters)
#
# ROLE selects what this host runs: `agent` (a CRM host: the agent's dependencies only,
# no OpenSearch client or plotting libraries; agent.yaml, the agent unit and state),
# `collector` (the central host: crm-audit[collector]; collector.yaml, rules.yaml,
# ISM policies, the collector unit and state) or `all` (both; the default).
#
# Environment: ROLE, PREFIX, DESTDIR (stage everything under it for packaging: no user is
# created, nothing is chowned, systemctl is not called, and the venv's scripts are
# rewritten to run from PREFIX), PYTHON (>= 3.11, default python3), SKIP_VENV=1 (lay
# out files only), PIP_ARGS (extra pip arguments, e.g. --no-index --find-links DIR),
# NATIVE (off: skip the compiled kernels, required: fail without them; by default they
# are built where cargo is installed, scripts/build-native.sh).
# Idempotent: running it again upgrades the package and the units, keeps the configs.
set -euo pipefail

PREFIX="${PREFIX:-/opt/crm-audit}"
DESTDIR="${DESTDIR:-}"
PYTHON="${PYTHON:-python3}"
SKIP_VENV="${SKIP_VENV:-0}"
ROLE="${ROLE:-all}"
PIP_ARGS="${PIP_ARGS:-}"
SERVICE_USER=crm-audit
SYSCONFDIR=/etc/crm-audit
STATEDIR=/var/lib/crm-audit
UNITDIR=/etc/systemd/system
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { echo "install: $*"; }
die() { echo "install: error: $*" >&2; exit 1; }

case "$ROLE" in
  agent) extra=agent roles="agent" ;;
  collector) extra=collector roles="collector" ;;
  all) extra=collector roles="agent collector" ;;
  *) die "ROLE must be agent, collector or all, got '$ROLE'" ;;
esac
has_role() { case " $roles " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

case "$PREFIX" in /*) ;; *) die "PREFIX must be an absolute path, got '$PREFIX'" ;; esac
PREFIX="${PREFIX%/}"
if [ -n "$DESTDIR" ]; then
  mkdir -p "$DESTDIR"
  DESTDIR="$(cd "$DESTDIR" && pwd)"
fi

# Only a real install as root creates the user and sets ownership; a DESTDIR staging
# area (packaging) or a non-root run lays out the files and leaves that to the package.
privileged=0
if [ -z "$DESTDIR" ] && [ "$(id -u)" -eq 0 ]; then
  privileged=1
elif [ -z "$DESTDIR" ]; then
  say "not root: skipping the user, ownership and systemctl (run as root for a real install)"
fi

if [ "$privileged" -eq 1 ] && ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
  nologin="$(command -v nologin || echo /usr/sbin/nologin)"
  useradd --system --user-group --home-dir "$STATEDIR" --no-create-home \
    --shell "$nologin" --comment "crm-audit agent and collector" "$SERVICE_USER"
  say "created system user $SERVICE_USER"
fi

# owner MODE PATH...: chown root:crm-audit (or the service user) only when privileged.
own() {
  local owner="$1" mode="$2"
  shift 2
  chmod "$mode" "$@"
  if [ "$privileged" -eq 1 ]; then chown "$owner" "$@"; fi
}

# --- the program: a virtualenv in PREFIX ---------------------------------------------
root_prefix="$DESTDIR$PREFIX"
mkdir -p "$root_prefix"
if [ "$SKIP_VENV" != 1 ]; then
  "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || die "$PYTHON is older than 3.11"
  if [ ! -x "$root_prefix/bin/python" ]; then
    "$PYTHON" -m venv "$root_prefix"
    say "created virtualenv $PREFIX"
  fi
  # shellcheck disable=SC2086 # PIP_ARGS is a list of arguments
  "$root_prefix/bin/python" -m pip install --quiet --disable-pip-version-check $PIP_ARGS \
    --upgrade "$SRC[$extra]"
  # The compiled kernels (the agent's JSON-lines mapping, the collector's documents),
  # where cargo is installed (optional; no Python dependency of their own).
  # shellcheck disable=SC2086
  PYTHON="$root_prefix/bin/python" bash "$SRC/scripts/build-native.sh" $PIP_ARGS
  if [ -n "$DESTDIR" ]; then
    # The venv was built where it is staged; its scripts must run from PREFIX.
    grep -rlIF "$root_prefix" "$root_prefix/bin" "$root_prefix/pyvenv.cfg" 2>/dev/null \
      | while IFS= read -r file; do sed -i "s#$root_prefix#$PREFIX#g" "$file"; done
  fi
  say "installed crm-audit[$extra] $("$root_prefix/bin/python" -c 'import importlib.metadata as m; print(m.version("crm-audit"))') into $PREFIX"
fi

# Reference material beside the program (always replaced: it belongs to this version).
share="$root_prefix/share/crm-audit"
rm -rf "$share"
mkdir -p "$share/examples" "$share/docs"
cp -R "$SRC/config/." "$share/examples/"
cp -R "$SRC/config/dashboards" "$SRC/config/opensearch" "$share/"
cp "$SRC/docs/"*.md "$share/docs/"
rm -f "$share/docs/CONVENTIONS.md"
install -m 0644 "$SRC/README.md" "$root_prefix/README.md"  # the units' Documentation=

# --- configuration: /etc/crm-audit ---------------------------------------------------
etc="$DESTDIR$SYSCONFDIR"
install -d "$etc" "$etc/keys" "$etc/opensearch"
own "root:$SERVICE_USER" 0750 "$etc" "$etc/keys" "$etc/opensearch"

# copy_absent SRC DEST [sed-script]: never overwrite an operator's file.
copy_absent() {
  local from="$1" to="$2" script="${3:-}"
  if [ -e "$to" ]; then
    return 0
  fi
  if [ -n "$script" ]; then
    sed -e "$script" "$from" >"$to"
  else
    cp "$from" "$to"
  fi
  own "root:$SERVICE_USER" 0640 "$to"
  say "created $SYSCONFDIR${to#"$etc"} (example: edit it)"
}
# The example collector.yaml points at the demo layout (../var/...); installed, the PKI
# and keys live in /etc/crm-audit and the checkpoints in the collector's state dir.
collector_paths='s#\.\./var/pki/#pki/#; s#\.\./var/keys#keys#; s#\.\./var/secrets/#secrets/#; s#\.\./var/checkpoints#'"$STATEDIR"'/collector/checkpoints#'
if has_role agent; then
  copy_absent "$SRC/config/agent.yaml" "$etc/agent.yaml"
fi
if has_role collector; then
  copy_absent "$SRC/config/collector.yaml" "$etc/collector.yaml" "$collector_paths"
  copy_absent "$SRC/config/rules.yaml" "$etc/rules.yaml"
  for policy in "$SRC"/config/opensearch/ism-*.json; do
    copy_absent "$policy" "$etc/opensearch/$(basename "$policy")"
  done
fi

# --- state: /var/lib/crm-audit -------------------------------------------------------
state="$DESTDIR$STATEDIR"
install -d -m 0755 "$state"
for role in $roles; do
  install -d "$state/$role"
  own "$SERVICE_USER:$SERVICE_USER" 0700 "$state/$role"
done

# --- systemd units ---------------------------------------------------------------------
units="$DESTDIR$UNITDIR"
install -d "$units"
# The collector role also gets the retention job's service and timer (secured clusters).
unit_files=()
for role in $roles; do
  unit_files+=("$SRC/systemd/crm-audit-$role.service")
  if [ "$role" = collector ]; then
    unit_files+=("$SRC/systemd/crm-audit-retention.service" "$SRC/systemd/crm-audit-retention.timer")
  fi
done
for unit in "${unit_files[@]}"; do
  sed -e "s#/opt/crm-audit#$PREFIX#g" "$unit" >"$units/$(basename "$unit").tmp"
  chmod 0644 "$units/$(basename "$unit").tmp"
  mv "$units/$(basename "$unit").tmp" "$units/$(basename "$unit")"
done
say "installed unit(s)$(for unit in "${unit_files[@]}"; do printf ' %s' "$(basename "$unit")"; done) into $UNITDIR"

# daemon-reload only on a running systemd (not in containers, chroots or DESTDIR builds).
if [ -z "$DESTDIR" ] && [ "$privileged" -eq 1 ] \
  && [ "$(cat /proc/1/comm 2>/dev/null || true)" = systemd ]; then
  systemctl daemon-reload
  say "systemctl daemon-reload done"
fi

say "done. Next: docs/operations.md (PKI, keys, sources), then"
if has_role collector; then say "  systemctl enable --now crm-audit-collector   # central host"; fi
if has_role agent; then say "  systemctl enable --now crm-audit-agent       # CRM hosts"; fi
