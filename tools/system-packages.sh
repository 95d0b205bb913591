#!/usr/bin/env bash
# The Debian packages the test suite starts for real on 127.0.0.1 (servers, browsers), installed
# when missing. `make test` runs this first, so a fresh machine needs nothing else; add a package
# here when a test starts a new kind of server.
set -euo pipefail
packages=(
  postgresql        # tests/test_sources.py: a real PostgreSQL source
  openssh-server    # tests/test_remotes.py: an SSH DVC remote
  redis-server      # Redis Streams: the events source and worker
  prometheus        # a real Prometheus scraping the API; promtool checks the alert rules
  chromium          # the monitoring dashboard, opened headless
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "system-packages: not a Debian/Ubuntu machine: install these (or their equivalents) first: ${missing[*]}" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
  sudo=(sudo -n)
  if ! sudo -n true 2>/dev/null; then
    echo "system-packages: needs root to install ${missing[*]}: run 'sudo bash tools/system-packages.sh' once (or sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
echo "installing system packages: ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
# Debian starts some services on install; the tests start their own on other ports.
for svc in redis-server prometheus postgresql ssh; do
  "${sudo[@]}" service "$svc" stop >/dev/null 2>&1 || true
done
