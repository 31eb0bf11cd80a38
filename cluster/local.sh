#!/usr/bin/env bash
# A Ray cluster of N nodes on this machine, every address on 127.0.0.1: a head and N-1 worker nodes,
# each a `ray start --block` in a session of its own, on ports that were free when it started
# (several clusters, of other users too, can share the machine).
#
#   cluster/local.sh up N [RAY START ARGS...]   a head and N-1 workers; again later: start the missing ones
#   cluster/local.sh status                     the addresses and each node's session, alive or not
#   cluster/local.sh down                       stop the nodes this script started, and nothing else
#
#   cluster/local.sh up 2 --num-cpus=2 --resources='{"slot": 1}'    # the arguments go to every node
#   ray job submit --address "$(cluster/local.sh dashboard)" --working-dir . -- python pipelines/train_9000.py ...
#
# State lives in $RAY_LOCAL_DIR (default .ray-local/ in the repository): cluster.env (GCS=, DASHBOARD=,
# TEMP_DIR=), nodes/<name>.sid, logs/<name>.log, and Ray's temp dir (a short one elsewhere if that path is
# long). `ray stop` is never used: it stops every Ray process on the machine, other clusters' included.
# RAY_AUTH_MODE defaults to disabled (loopback only).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${RAY_LOCAL_DIR:-$REPO/.ray-local}"
[ -x "$REPO/.venv/bin/ray" ] && PATH="$REPO/.venv/bin:$PATH"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
# `down` stops the whole cluster: no node waits (30 s by default) to drain work onto the others first
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0}"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-120}"

die() { echo "local.sh: $*" >&2; exit 1; }

free_ports() {  # N ports free on 127.0.0.1 now, all different
  python3 - "$1" <<'EOF'
import socket, sys
probes = [socket.socket() for _ in range(int(sys.argv[1]))]
for probe in probes:
    probe.bind(("127.0.0.1", 0))
print(" ".join(str(p.getsockname()[1]) for p in probes))
EOF
}

# A node is one session: `ray start --block` leads it, raylet's workers get process groups of their own in it.
members() { ps -o pid=,stat= -s "$1" 2>/dev/null | awk '$2 !~ /^Z/ {print $1}' || true; }  # zombies aside
alive() { [ -n "$(members "$1")" ]; }
signal_node() { local pid; for pid in $(members "$2"); do kill "-$1" "$pid" 2>/dev/null || true; done; }

node_names() { [ -d "$STATE/nodes" ] && find "$STATE/nodes" -name '*.sid' -printf '%f\n' | sed 's/\.sid$//' | sort; }

start_node() {  # name, extra ray start args...: one node in a session of its own, its id recorded
  local name="$1"; shift
  local ports; read -r -a ports <<<"$(free_ports 6)"
  mkdir -p "$STATE/nodes" "$STATE/logs"
  # setsid: a new session whose id is the pid ($! leads no process group, so setsid does not fork)
  setsid ray start --block --node-ip-address=127.0.0.1 --temp-dir="$TEMP_DIR" --disable-usage-stats \
    --node-manager-port="${ports[0]}" --object-manager-port="${ports[1]}" \
    --dashboard-agent-listen-port="${ports[2]}" --dashboard-agent-grpc-port="${ports[3]}" \
    --runtime-env-agent-port="${ports[4]}" --metrics-export-port="${ports[5]}" \
    --min-worker-port=0 --max-worker-port=0 "$@" </dev/null >"$STATE/logs/$name.log" 2>&1 &
  echo "$!" >"$STATE/nodes/$name.sid"
  # one node at a time: nodes sharing a temp dir pick their socket names by counting files there
  local started=$SECONDS
  until grep -qs "Ray runtime started" "$STATE/logs/$name.log"; do  # said once the node has registered
    alive "$!" || die "node $name exited; see $STATE/logs/$name.log"
    [ $((SECONDS - started)) -lt "$READY_TIMEOUT_S" ] || die "node $name not up after ${READY_TIMEOUT_S} s"
    sleep 0.2
  done
}

alive_nodes() {  # the number of nodes the cluster counts as alive (Ray's state API, through the dashboard)
  ray list nodes --address "$DASHBOARD" --filter state=ALIVE --format json 2>/dev/null | grep -o '"node_id"' | wc -l
}

wait_ready() {  # N nodes alive and the head's job agent taking jobs
  local want="$1" started=$SECONDS
  until [ "$(alive_nodes)" -ge "$want" ] \
      && ray job submit --address "$DASHBOARD" --no-wait -- true >/dev/null 2>&1; do
    [ $((SECONDS - started)) -lt "$READY_TIMEOUT_S" ] || die "not ready after ${READY_TIMEOUT_S} s; see $STATE/logs/"
    alive "$(cat "$STATE/nodes/head.sid")" || die "the head exited; see $STATE/logs/head.log"
    sleep 1
  done
}

load_state() { [ -f "$STATE/cluster.env" ] && . "$STATE/cluster.env"; }

up() {
  local want="${1:-}"; shift || true
  [[ "$want" =~ ^[1-9][0-9]*$ ]] || die "usage: local.sh up N [ray start args...] (N >= 1 nodes)"
  if load_state && alive "$(cat "$STATE/nodes/head.sid")"; then
    echo "local.sh: the head is running; starting the missing nodes"
  else
    [ ! -f "$STATE/cluster.env" ] || down >/dev/null
    local ports; read -r -a ports <<<"$(free_ports 3)"
    GCS="127.0.0.1:${ports[0]}" DASHBOARD="http://127.0.0.1:${ports[1]}" TEMP_DIR="$STATE/ray"
    # Ray's sockets live in TEMP_DIR/session_<date>_<pid>/sockets/: a Unix socket path holds at most 107 bytes
    [ ${#TEMP_DIR} -le 32 ] || TEMP_DIR="$(mktemp -d -t ray-local.XXXXXX)"
    start_node head --head --port="${ports[0]}" --dashboard-host=127.0.0.1 --dashboard-port="${ports[1]}" \
      --ray-client-server-port="${ports[2]}" "$@"
    printf 'GCS=%s\nDASHBOARD=%s\nTEMP_DIR=%s\n' "$GCS" "$DASHBOARD" "$TEMP_DIR" >"$STATE/cluster.env"
  fi
  local name index=1 running=1
  for name in $(node_names); do  # worker nodes whose session died are started again under their name
    [ "$name" = head ] && continue
    [ "$running" -lt "$want" ] || break
    alive "$(cat "$STATE/nodes/$name.sid")" || start_node "$name" --address="$GCS" "$@"
    running=$((running + 1))
  done
  while [ "$running" -lt "$want" ]; do
    while [ -f "$STATE/nodes/worker$index.sid" ]; do index=$((index + 1)); done
    start_node "worker$index" --address="$GCS" "$@"
    running=$((running + 1))
  done
  wait_ready "$want"
  status
}

status() {
  load_state || { echo "local.sh: no cluster in $STATE"; return 1; }
  echo "head      $GCS   (RAY_ADDRESS, ray start --address)"
  echo "dashboard $DASHBOARD   (ray job submit --address)"
  local name sid
  for name in $(node_names); do
    sid="$(cat "$STATE/nodes/$name.sid")"
    printf '%-9s session %-8s %s\n' "$name" "$sid" "$(alive "$sid" && echo alive || echo stopped)"
  done
  echo "alive nodes (GCS): $(alive_nodes); logs in $STATE/logs/"
}

stop_node() {  # SIGTERM to the node's `ray start --block` (it drains and stops its node), SIGKILL after 30 s
  local name="$1" sid waited
  sid="$(cat "$STATE/nodes/$name.sid")"
  # the leader only (all at once, it waits on children that are gone); its pid checked as still its own
  [ "$(ps -o sid= -p "$sid" | tr -d ' ')" != "$sid" ] || kill -TERM "$sid" 2>/dev/null || true
  for waited in $(seq 150); do alive "$sid" || break; sleep 0.2; done
  signal_node KILL "$sid"
  rm -f "$STATE/nodes/$name.sid"
  echo "local.sh: stopped $name (session $sid)"
}

down() {  # the worker nodes, then the head (a worker's drain asks the head's GCS)
  load_state || { echo "local.sh: no cluster in $STATE"; return 0; }
  local name
  for name in $(node_names); do [ "$name" = head ] || stop_node "$name" & done
  wait
  [ ! -f "$STATE/nodes/head.sid" ] || stop_node head
  [ "$TEMP_DIR" = "$STATE/ray" ] || rm -rf "$TEMP_DIR"  # a short one of its own (see up); logs stay in $STATE/logs
  rm -f "$STATE/cluster.env"
}

command="${1:-}"; shift || true
case "$command" in
  up) up "$@" ;;
  down) down ;;
  status) status ;;
  address) load_state && echo "$GCS" ;;
  dashboard) load_state && echo "$DASHBOARD" ;;
  *) die "usage: local.sh up N [ray start args...] | down | status | address | dashboard" ;;
esac
