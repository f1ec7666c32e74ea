#!/usr/bin/env bash
# Start what the e2e tests need and is not there yet: a Docker daemon (docker-up.sh), the
# tools that boot systemd as PID 1 in a container for the systemd tests (podman, and
# systemd-nspawn from systemd-container for hosts whose cgroups keep podman from running
# systemd: tests/e2e/systemd_container.py picks one from the host), and iproute2 (the
# partition chaos test puts an agent in a network namespace), docker-compose (to validate
# docker-compose.yml), Debian's redis-server + redis-sentinel (the Sentinel failover tests;
# apt does not start them). Then a host check that boots
# and stops a systemd container and says in one line what is wrong if it cannot.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
[ -x /lib/systemd/systemd ] || [ -x /usr/lib/systemd/systemd ] || missing+=(systemd)
command -v dbus-daemon >/dev/null 2>&1 || missing+=(dbus)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)  # the partition chaos test
[ -x /usr/bin/redis-server ] || missing+=(redis-server)  # tests/sentinel.py runs these two
[ -x /usr/bin/redis-sentinel ] || missing+=(redis-sentinel)
docker-compose version >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 \
  || missing+=(docker-compose)  # tests/unit/test_compose.py validates docker-compose.yml
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (for the end-to-end and chaos tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
bash "$here/docker-up.sh"
# the host check (needs .venv: `make services` builds it): one line either way, and a host
# that cannot boot a systemd container fails here rather than in every systemd test
cd "$repo" && .venv/bin/python -m tests.e2e.systemd_container
