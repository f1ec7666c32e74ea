#!/usr/bin/env bash
# Stop the dockerd that scripts/docker-up.sh started, found by its pidfile; nothing else.
#
# dockerd stops its running containers (SIGTERM, then SIGKILL after --shutdown-timeout)
# and the containerd it manages; what it leaves mounted under its exec root is unmounted.
# Images and volumes stay in the data root for next time.
# Same variables as docker-up.sh (GRID_DOCKER_RUN); GRID_DOCKER_WAIT bounds the wait.
set -euo pipefail

RUN=${GRID_DOCKER_RUN:-/run/grid-docker}
WAIT=${GRID_DOCKER_WAIT:-60}
PIDFILE=$RUN/dockerd.pid

if [ ! -f "$PIDFILE" ]; then
    echo "docker-down: no $PIDFILE: no daemon of docker-up.sh to stop" >&2
    exit 0
fi
pid=$(cat "$PIDFILE")
if ! kill -0 "$pid" 2>/dev/null || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
    echo "docker-down: pid $pid is not a running dockerd; removing the stale pidfile" >&2
    rm -f "$PIDFILE"
    exit 0
fi

kill -TERM "$pid"
deadline=$(($(date +%s) + WAIT))
while kill -0 "$pid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "docker-down: dockerd (pid $pid) still runs after ${WAIT}s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        break
    fi
    sleep 0.1
done
rm -f "$PIDFILE"
# dockerd leaves its network namespace mounted (exec/netns/default): unmount what is ours.
leftovers=$(findmnt -rn -o TARGET | grep "^$RUN/" | sort -r || true)
for target in $leftovers; do
    umount "$target" || echo "docker-down: could not unmount $target" >&2
done
echo "docker-down: dockerd (pid $pid) stopped" >&2
