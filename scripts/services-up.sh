#!/usr/bin/env bash
# Start what the e2e tests need and is not there yet: a Docker daemon (docker-up.sh), and
# podman + systemd (the systemd tests boot systemd as PID 1 inside a podman container), and
# iproute2 (the partition chaos test puts an agent in a network namespace), and Debian's
# redis-server + redis-sentinel (the Sentinel failover tests; apt does not start them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
[ -x /lib/systemd/systemd ] || [ -x /usr/lib/systemd/systemd ] || missing+=(systemd)
command -v dbus-daemon >/dev/null 2>&1 || missing+=(dbus)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)  # the partition chaos test
[ -x /usr/bin/redis-server ] || missing+=(redis-server)  # tests/sentinel.py runs these two
[ -x /usr/bin/redis-sentinel ] || missing+=(redis-sentinel)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (for the end-to-end and chaos tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
bash "$here/docker-up.sh"
