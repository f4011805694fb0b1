#!/usr/bin/env bash
# Install the peer for the benchmark: rsyslog with its Elasticsearch output module
# (Debian packages rsyslog + rsyslog-elasticsearch), only when something is missing.
# The benchmark runs its own rsyslogd in the foreground with a private config; the
# distribution's service is neither needed nor started here (no service is enabled or
# started by this script; on systemd hosts the package may start one, which the
# benchmark does not touch).
# Without root, print what to install instead and exit 1.
set -euo pipefail

missing=()
command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ] || missing+=(rsyslog)
moddir=$(dirname "$(find /usr/lib -name imfile.so -path '*rsyslog*' 2>/dev/null | head -n1)" 2>/dev/null || true)
if [ -z "$moddir" ] || [ ! -f "$moddir/omelasticsearch.so" ]; then
  missing+=(rsyslog-elasticsearch)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "bench: missing packages for the rsyslog peer: ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "bench: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# rsyslog-elasticsearch depends on rsyslog, so both come in when only the daemon is missing.
apt-get install -y -qq --no-install-recommends rsyslog rsyslog-elasticsearch
