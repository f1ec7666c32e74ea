#!/usr/bin/env bash
# Start what the e2e tests need and is not running: a Docker daemon (and podman for systemd).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ -x "$here/docker-up.sh" ]; then bash "$here/docker-up.sh"; fi
if ! command -v podman >/dev/null 2>&1; then
  echo "installing podman (systemd e2e tests run systemd inside a podman container)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman >/dev/null
fi
