#!/usr/bin/env bash
# Stop only what services-up.sh started.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ -x "$here/docker-down.sh" ]; then bash "$here/docker-down.sh"; fi
exit 0
