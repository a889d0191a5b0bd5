#!/usr/bin/env bash
# Build cloud and edge "hosts" as Linux network namespaces, joined by veth pairs to a bridge
# that lives in its own namespace, with tc netem delay on the edge links; start one fabric
# node in each; tear it all down again. Every address is inside these namespaces: the host's
# own network is never touched.
#
#   sudo deploy/netns/mesh.sh up      # build and start (prints FABRIC_URL per node)
#   sudo deploy/netns/mesh.sh status  # namespaces, addresses, node pids
#   sudo deploy/netns/mesh.sh down    # stop nodes, delete namespaces (safe to repeat)
#
# Environment: AF_CLOUDS (2), AF_EDGES (1), AF_DELAY (20ms, each way on an edge's link),
# AF_DELAY_MODE (auto: tc netem when the kernel has sch_netem, else delay_proxy.py, a TCP
# relay inside the edge namespace that delays every byte the same way; netem; proxy),
# AF_DIR (/tmp/af-netns: configs, sockets, logs, pids), AF_NET (10.251.0), AF_PORT (4250),
# PYTHON (python3; must import fabric).
set -euo pipefail

CLOUDS=${AF_CLOUDS:-2}
EDGES=${AF_EDGES:-1}
DELAY=${AF_DELAY:-20ms}
DIR=${AF_DIR:-/tmp/af-netns}
NET=${AF_NET:-10.251.0}
PORT=${AF_PORT:-4250}
PY=${PYTHON:-python3}
MODE=${AF_DELAY_MODE:-auto}
SW=af-sw
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MS=${DELAY%ms}

hosts() {
  for i in $(seq 1 "$CLOUDS"); do echo "cloud$i"; done
  for i in $(seq 1 "$EDGES"); do echo "edge$i"; done
}
addr() { case $1 in cloud*) echo "$NET.${1#cloud}" ;; edge*) echo "$NET.$((100 + ${1#edge}))" ;; esac; }

up() {
  mkdir -p "$DIR"
  chmod 700 "$DIR"
  ip netns add "$SW"
  ip -n "$SW" link add br0 type bridge
  ip -n "$SW" link set br0 up
  ip -n "$SW" link set lo up
  for h in $(hosts); do
    local ns="af-$h"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # both ends created directly inside their namespaces: nothing appears on the host
    ip link add "v-$h" netns "$ns" type veth peer name "p-$h" netns "$SW"
    ip -n "$ns" addr add "$(addr "$h")/24" dev "v-$h"
    ip -n "$ns" link set "v-$h" up
    ip -n "$SW" link set "p-$h" master br0
    ip -n "$SW" link set "p-$h" up
    if [[ $h == edge* && $MODE != proxy ]]; then
      if ip netns exec "$ns" tc qdisc add dev "v-$h" root netem delay "$DELAY" 2>/dev/null; then
        ip netns exec "$SW" tc qdisc add dev "p-$h" root netem delay "$DELAY"
        MODE=netem
      elif [[ $MODE == netem ]]; then
        echo "tc netem is not available in this kernel (sch_netem)" >&2; exit 1
      else
        MODE=proxy
      fi
    fi
  done
  echo "delay between sites: $DELAY each way ($MODE)"
  local cluster=() i
  for i in $(seq 1 "$CLOUDS"); do cluster+=("tcp://$NET.$i:$PORT"); done
  for h in $(hosts); do
    local conf="$DIR/$h.toml"
    if [[ $h == cloud* ]]; then
      local me="tcp://$(addr "$h"):$PORT" seeds=()
      for u in "${cluster[@]}"; do [[ $u != "$me" ]] && seeds+=("\"$u\""); done
      printf 'site = "cloud"\ncluster = "%s"\nseeds = [%s]\n' "$me" "$(IFS=,; echo "${seeds[*]:-}")" >"$conf"
    else
      local hubs=() n=0
      for u in "${cluster[@]}"; do
        if [[ $MODE == proxy ]]; then
          # the edge reaches each cloud node through a delaying relay in its own namespace
          n=$((n + 1))
          local lport=$((PORT + 100 + n))
          ip netns exec "af-$h" setsid "$PY" "$HERE/delay_proxy.py" "127.0.0.1:$lport" \
            "${u#tcp://}" "$MS" >"$DIR/$h-proxy$n.log" 2>&1 </dev/null &
          echo $! >"$DIR/$h-proxy$n.pid"
          u="tcp://127.0.0.1:$lport"
        fi
        hubs+=("\"$u\"")
      done
      printf 'site = "%s"\nleaf_of = [%s]\n' "$h" "$(IFS=,; echo "${hubs[*]}")" >"$conf"
    fi
    ip netns exec "af-$h" setsid "$PY" -m fabric node --name "$h" --socket "$DIR/$h.sock" \
      --config "$conf" >"$DIR/$h.log" 2>&1 </dev/null &
    echo $! >"$DIR/$h.pid"
  done
  for h in $(hosts); do
    for _ in $(seq 1 300); do
      grep -q ready "$DIR/$h.log" 2>/dev/null && break
      kill -0 "$(cat "$DIR/$h.pid")" 2>/dev/null || { cat "$DIR/$h.log" >&2; echo "node $h died" >&2; exit 1; }
      sleep 0.1
    done
    grep -q ready "$DIR/$h.log" || { echo "node $h not ready" >&2; exit 1; }
    echo "$h ready: FABRIC_URL=unix://$DIR/$h.sock ($(addr "$h"))"
  done
}

down() {
  for h in $(hosts) $(cd "$DIR" 2>/dev/null && ls -- *.pid 2>/dev/null | sed 's/\.pid$//'); do
    local pidfile="$DIR/$h.pid"
    [[ -f $pidfile ]] || continue
    local pid
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
  for ns in $(ip netns list | awk '{print $1}' | grep -E '^af-(cloud|edge)[0-9]+$|^af-sw$' || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
}

status() {
  ip netns list | grep -E '^af-' || echo "no af-* namespaces"
  for h in $(hosts); do
    [[ -f $DIR/$h.pid ]] && echo "$h pid $(cat "$DIR/$h.pid") $(ip -n "af-$h" -brief addr show "v-$h" 2>/dev/null)"
  done
  true
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
