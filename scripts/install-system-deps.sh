#!/usr/bin/env bash
# Install the system packages crm-audit needs on a Debian/Ubuntu machine, only when
# something is missing: Java 17+ (OpenSearch), Maven (fetches OpenSearch from Maven
# Central), python3-venv, and the database servers whose real audit logs the parser
# tests read (PostgreSQL 15 + pgaudit, MariaDB with server_audit); optionally Debian's
# chromium, which the compliance report's headless-browser test opens the report in (it
# is skipped without it). Without root, print what to install instead.
set -euo pipefail

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
command -v useradd >/dev/null 2>&1 || missing+=(passwd)
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
[ -f /usr/lib/postgresql/15/lib/pgaudit.so ] || missing+=(postgresql-15-pgaudit)
{ command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; } || missing+=(mariadb-server)
optional=()
command -v chromium >/dev/null 2>&1 || optional+=(chromium)

[ ${#missing[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "crm-audit: missing system packages: ${missing[*]} (install them, e.g. sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "crm-audit: optional package not installed: ${optional[*]} (the report's browser test is skipped; sudo apt-get install ${optional[*]})" >&2
  exit 0
fi
missing+=("${optional[@]}")
echo "crm-audit: installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The database packages would start their default servers (PostgreSQL on 5432, MariaDB
# on 3306) from their maintainer scripts; the tests start their own on free loopback
# ports, so tell invoke-rc.d not to start any service during this install.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 0755 "$policy"
  made_policy=1
fi
trap '[ "$made_policy" -eq 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
