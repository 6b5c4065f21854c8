#!/usr/bin/env bash
# A multi-node Ray cluster on one machine, for development: a head and N worker nodes on 127.0.0.1,
# each its own raylet with its own resources, so that Ray Train spreads workers over "nodes" the way
# it does on a real cluster.
#
#   scripts/local_cluster.sh start N   head + N workers; prints the addresses to use
#   scripts/local_cluster.sh status    nodes and resources (`ray status`)
#   scripts/local_cluster.sh stop      stops this cluster's processes, and only them
#
# Every port is derived from KOELECTRA_RAY_PORT (the GCS port, default 46379) and everything lives
# under its own temp dir, so it never collides with a default `ray start` or another Ray instance on
# this machine: run two clusters with two port bases. Worker node i gets the resources
# {"worker": 1, "worker_<i>": 1} (place work on it with `resources={"worker_1": 1}`); the head gets
# {"head": 1}. The job server listens on http://127.0.0.1:<port+1>.
#
# Ray 2.60 protects a cluster with a token: this one gets its own token file in its temp dir (not
# the shared ~/.ray/auth_token), and clients need the two variables `start` prints:
#
#   export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/tmp/koelectra-ray-46379/auth_token
#   RAY_ADDRESS=http://127.0.0.1:46380 ray job submit --working-dir . -- python launch.py --config configs/tiny.json
#
# Ray advertises the machine's own address rather than 127.0.0.1 (it does so on purpose for every
# node); all processes still run on this machine.
#
# Settings (environment): KOELECTRA_RAY_PORT, KOELECTRA_RAY_DIR (temp dir; default
# /tmp/koelectra-ray-<port>), HEAD_CPUS (1), WORKER_CPUS (1), OBJECT_STORE_BYTES per node (200 MB),
# RAY (the `ray` executable; default: the project's .venv/bin/ray, else the one on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${KOELECTRA_RAY_PORT:-46379}
DIR=${KOELECTRA_RAY_DIR:-/tmp/koelectra-ray-$PORT}
HEAD_CPUS=${HEAD_CPUS:-1}
WORKER_CPUS=${WORKER_CPUS:-1}
OBJECT_STORE_BYTES=${OBJECT_STORE_BYTES:-200000000}
# Job entrypoints (`python launch.py ...`) run with the nodes' PATH: put the project's venv first.
[ -d .venv/bin ] && export PATH="$PWD/.venv/bin:$PATH"
RAY=${RAY:-ray}
DASHBOARD_PORT=$((PORT + 1))
GCS=127.0.0.1:$PORT
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$DIR/auth_token
# Ray processes that look up "the" local cluster (Ray Train's helpers use the state API) would find
# every Ray instance on this machine; point them at this one.
export RAY_ADDRESS=$GCS

usage() {
  echo "usage: $0 start N | status | stop   (N = worker nodes besides the head)" >&2
  exit 2
}

# Ports of node k (0 = head): a block of 10 fixed ports and 100 worker ports, so that nodes sharing
# one IP never race for the same port.
node_ports() {
  local base=$((PORT + 10 + 10 * $1)) workers=$((PORT + 200 + 100 * $1))
  echo "--node-manager-port $base --object-manager-port $((base + 1))" \
    "--dashboard-agent-listen-port $((base + 2)) --dashboard-agent-grpc-port $((base + 3))" \
    "--metrics-export-port $((base + 4)) --runtime-env-agent-port $((base + 5))" \
    "--min-worker-port $workers --max-worker-port $((workers + 99))"
}

# Each node gets its own temp dir: nodes sharing one would unpack job working dirs into the same
# folder at the same time and forward each other's logs.
common_args() {
  echo "--temp-dir $DIR/$1 --object-store-memory $OBJECT_STORE_BYTES --disable-usage-stats"
}

# PIDs of this cluster's processes: the node daemons carry its temp dir (ours alone) on their
# command lines; their descendants (agents, workers, job drivers) rename themselves, so follow them.
cluster_pids() {
  local pids children
  pids=$(pgrep -f -- "$DIR/" || true)
  children=$pids
  while [ -n "$children" ]; do
    children=$(pgrep -P "$(echo $children | tr ' ' ',')" || true)
    pids="$pids $children"
  done
  echo $pids
}

start() {
  local n=$1
  [[ "$n" =~ ^[0-9]+$ ]] || usage
  if [ -n "$(cluster_pids)" ]; then
    echo "a cluster is already running under $DIR; run: $0 stop" >&2
    exit 1
  fi
  mkdir -p "$DIR"
  (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$RAY_AUTH_TOKEN_PATH")
  # shellcheck disable=SC2046  # the helpers print space-separated flags on purpose
  "$RAY" start --head --port "$PORT" --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" \
    --ray-client-server-port $((PORT + 2)) --num-cpus "$HEAD_CPUS" --num-gpus 0 \
    --resources '{"head": 1}' $(common_args head) $(node_ports 0) >"$DIR/head.log" 2>&1 ||
    fail "head" "$DIR/head.log"
  local pids=()
  for i in $(seq 1 "$n"); do  # in parallel: each node takes seconds to come up
    # shellcheck disable=SC2046
    "$RAY" start --address "$GCS" --num-cpus "$WORKER_CPUS" --num-gpus 0 \
      --resources "{\"worker\": 1, \"worker_$i\": 1}" $(common_args "worker-$i") $(node_ports "$i") \
      >"$DIR/worker-$i.log" 2>&1 &
    pids+=($!)
  done
  for i in $(seq 1 "$n"); do
    wait "${pids[$((i - 1))]}" || fail "worker $i" "$DIR/worker-$i.log"
  done
  # Ready once the autoscaler's status (what `status` shows) lists every node.
  for _ in $(seq 1 30); do
    [ "$("$RAY" status --address "$GCS" 2>/dev/null | grep -c ' node_')" -ge $((n + 1)) ] && break
    sleep 2
  done
  echo "started a head and $n worker node(s) under $DIR"
  echo "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"
  echo "export RAY_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT   # for ray job submit / ray job logs / ray job status"
  echo "GCS address: $GCS   ($0 status)"
}

fail() {
  echo "starting the $1 node failed; its output ($2):" >&2
  tail -n 30 "$2" >&2
  stop >&2
  exit 1
}

stop() {
  local pids
  pids=$(cluster_pids)
  if [ -z "$pids" ]; then
    echo "no cluster running under $DIR"
    return 0
  fi
  # shellcheck disable=SC2086
  kill $pids 2>/dev/null || true
  for _ in $(seq 1 20); do
    [ -z "$(cluster_pids)" ] && break
    sleep 0.5
  done
  pids=$(cluster_pids)
  # shellcheck disable=SC2086
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
  echo "stopped the cluster under $DIR"
}

case "${1:-}" in
  start) [ $# -eq 2 ] || usage; start "$2" ;;
  status)
    [ -n "$(cluster_pids)" ] || { echo "no cluster running under $DIR" >&2; exit 1; }
    "$RAY" status --address "$GCS"
    ;;
  stop) stop ;;
  *) usage ;;
esac
