#!/usr/bin/env bash
# Make sure a Docker daemon answers, for Grid's docker e2e tests and benchmarks.
#
# Idempotent: when `docker info` already works (a system daemon, or a previous run of this
# script) it does nothing. Otherwise it installs docker.io and busybox-static with apt when
# they are missing, starts a private dockerd with everything under its own folders, and
# waits until the daemon answers. scripts/docker-down.sh stops that daemon (and only it).
#
# The daemon listens on the standard socket, so the docker CLI, docker-py's from_env() and
# the tests find it with no DOCKER_HOST. Override with the variables below.
#
#   GRID_DOCKER_ROOT    data root        (default /var/lib/grid-docker)
#   GRID_DOCKER_RUN     exec root, pidfile, log, env file (default /run/grid-docker)
#   GRID_DOCKER_SOCK    socket path      (default /var/run/docker.sock)
#   GRID_DOCKER_DRIVER  storage driver   (default overlay2; vfs also works)
#   GRID_DOCKER_WAIT    seconds to wait for the daemon (default 60)
set -euo pipefail

ROOT=${GRID_DOCKER_ROOT:-/var/lib/grid-docker}
RUN=${GRID_DOCKER_RUN:-/run/grid-docker}
SOCK=${GRID_DOCKER_SOCK:-/var/run/docker.sock}
DRIVER=${GRID_DOCKER_DRIVER:-overlay2}
WAIT=${GRID_DOCKER_WAIT:-60}
PIDFILE=$RUN/dockerd.pid
LOG=$RUN/dockerd.log

export DOCKER_HOST=${DOCKER_HOST:-unix://$SOCK}

daemon_answers() { docker info >/dev/null 2>&1; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
[ -x /bin/busybox ] || missing+=(busybox-static)  # the e2e test image is built from it
if [ ${#missing[@]} -gt 0 ]; then
    echo "docker-up: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "${missing[@]}" >/dev/null; then
        apt-get update -qq  # stale package lists on a fresh machine
        apt-get install -y -q "${missing[@]}" >/dev/null
    fi
fi

if daemon_answers; then
    echo "docker-up: a daemon already answers at $DOCKER_HOST" >&2
    exit 0
fi

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "docker-up: dockerd (pid $(cat "$PIDFILE")) runs but does not answer; see $LOG" >&2
    exit 1
fi

mkdir -p "$ROOT" "$RUN"
started=$(date +%s.%N)
# setsid: its own session, so a Ctrl-C of the caller (make, pytest) does not reach it.
setsid dockerd \
    --iptables=false --ip-masq=false --bridge=none \
    --storage-driver="$DRIVER" \
    --data-root="$ROOT" --exec-root="$RUN/exec" --pidfile="$PIDFILE" \
    --host="unix://$SOCK" \
    --log-level=warn \
    </dev/null >"$LOG" 2>&1 &
pid=$!
echo "export DOCKER_HOST=unix://$SOCK" >"$RUN/env"

deadline=$(($(date +%s) + WAIT))
until daemon_answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "docker-up: dockerd exited; last lines of $LOG:" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "docker-up: dockerd (pid $pid) did not answer within ${WAIT}s; see $LOG" >&2
        exit 1
    fi
    sleep 0.1
done
took=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "docker-up: dockerd pid $pid answers at unix://$SOCK (driver $DRIVER, ${took}s)" >&2
