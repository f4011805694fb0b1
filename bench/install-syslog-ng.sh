#!/usr/bin/env bash
# Install the second peer for the benchmark: syslog-ng with its HTTP module and the SCL
# that defines the elasticsearch-http() destination (Debian packages syslog-ng-core,
# syslog-ng-mod-http, syslog-ng-scl), only when something is missing.
#
# Debian's syslog-ng-core and rsyslog conflict (both are "the" system log daemon), so
# the packages are not installed: they are fetched with `apt-get download` and unpacked
# into a private tree, $CRM_AUDIT_CACHE/syslog-ng (default ~/.cache/crm-audit/syslog-ng),
# which the benchmark runs in the foreground with a private config, beside rsyslog.
# Nothing is registered with dpkg, no service is installed, enabled or started, and the
# host's system logger is not touched. The shared libraries the daemon links against
# (none of them a logger) are installed with apt-get.
# Without root, print what to install instead and exit 1.
set -euo pipefail

cache="${CRM_AUDIT_CACHE:-$HOME/.cache/crm-audit}/syslog-ng"
root="$cache/root"
packages=(syslog-ng-core syslog-ng-mod-http syslog-ng-scl)
# Depends: of syslog-ng-core and syslog-ng-mod-http (bookworm), less what every Debian has.
libraries=(libivykis0 libpcre3 libnet1 libjson-c5 libwrap0 libglib2.0-0 libcurl4)

runs() {
  LD_LIBRARY_PATH="$root/usr/lib/syslog-ng" "$root/usr/sbin/syslog-ng" --version >/dev/null 2>&1 \
    && compgen -G "$root/usr/lib/syslog-ng/*/libhttp.so" >/dev/null \
    && [ -f "$root/usr/share/syslog-ng/include/scl/elasticsearch/elastic-http.conf" ]
}
runs && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "bench: the syslog-ng peer needs ${packages[*]} unpacked into $root and ${libraries[*]} installed: run bash bench/install-syslog-ng.sh as root" >&2
  exit 1
fi
echo "bench: fetching ${packages[*]} into $root"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${libraries[@]}"
download="$(mktemp -d)"
chmod 0755 "$download"  # apt-get download runs as _apt
trap 'rm -rf "$download"' EXIT
(cd "$download" && apt-get download -qq "${packages[@]}")
rm -rf "$root"
mkdir -p "$root"
for deb in "$download"/*.deb; do
  dpkg-deb -x "$deb" "$root"
done
runs || { echo "bench: syslog-ng unpacked into $root does not run" >&2; exit 1; }
echo "bench: syslog-ng $(LD_LIBRARY_PATH="$root/usr/lib/syslog-ng" "$root/usr/sbin/syslog-ng" --version | head -n1) in $root"
