#!/usr/bin/env bash
# `make demo`: a local grid on an embedded Redis, scaled up and down with real storage nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
G=.venv/bin/grid
export GRID_HOME="${GRID_HOME:-$PWD/.grid-demo}"
unset GRID_REDIS_URL
rm -rf "$GRID_HOME"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step "grid up --agents 2   (in the background; its log: $GRID_HOME/up.log)"
mkdir -p "$GRID_HOME"
$G up --agents 2 >"$GRID_HOME/up.log" 2>&1 &
UP=$!
trap 'kill -INT $UP 2>/dev/null; wait $UP 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  grep -q "grid is up" "$GRID_HOME/up.log" 2>/dev/null && break
  kill -0 $UP 2>/dev/null || { cat "$GRID_HOME/up.log"; exit 1; }
  sleep 0.1
done
cat "$GRID_HOME/up.log"

step "grid scale --nodes 5";  $G scale --nodes 5
step "grid nodes";            $G nodes
NODE=$($G nodes --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)[0]["endpoint"])')
step "curl -X PUT $NODE/kv/hello -d world && curl $NODE/kv/hello"
.venv/bin/python - "$NODE" <<'PY'
import sys, urllib.request
base = sys.argv[1]
urllib.request.urlopen(urllib.request.Request(f"{base}/kv/hello", data=b"world", method="PUT"))
print(urllib.request.urlopen(f"{base}/kv/hello").read().decode())
PY
step "grid scale --nodes 2";  $G scale --nodes 2
step "grid status";           $G status
step "grid agents";           $G agents
step "grid events --limit 8"; $G events --limit 8
step "grid scale --nodes 0";  $G scale --nodes 0
printf '\nDemo done: stopping the grid (Ctrl-C to grid up).\n'
printf 'Run your own:  .venv/bin/grid up --agents 2   then, in another terminal in this folder,  .venv/bin/grid scale --nodes 5\n'
