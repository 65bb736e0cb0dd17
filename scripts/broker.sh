#!/usr/bin/env bash
# Runs a private RabbitMQ node on 127.0.0.1 with its own directory and pinned ports, so it never
# collides with a system broker or with another run. As root, without systemd.
#
#   scripts/broker.sh start DIR PORT   start a node (AMQP on PORT; PORT+1..PORT+9 used internally)
#   scripts/broker.sh stop DIR         stop the node and its private epmd (by PID)
#   scripts/broker.sh ctl DIR ARGS...  run rabbitmqctl against the node (e.g. stop_app, start_app)
#   scripts/broker.sh free-port START  print the first PORT >= START whose 10 ports are all free
#
# Ports: AMQP=PORT, management HTTP=PORT+1, prometheus=PORT+2, Erlang distribution=PORT+3,
# epmd=PORT+4, rabbitmqctl distribution PORT+5..PORT+9.
set -euo pipefail

RMQ_BIN=/usr/lib/rabbitmq/bin

die() { echo "broker: $*" >&2; exit 1; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Environment shared by the server and every rabbitmqctl call; reads PORT from DIR/port.
node_env() {
  local dir=$1
  [ -f "$dir/port" ] || die "$dir has no node (missing $dir/port)"
  local port
  port=$(cat "$dir/port")
  export HOME="$dir"
  export RABBITMQ_NODENAME="herald-$port@localhost"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$port
  export RABBITMQ_DIST_PORT=$((port + 3))
  export ERL_EPMD_PORT=$((port + 4))
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_CTL_DIST_PORT_MIN=$((port + 5))
  export RABBITMQ_CTL_DIST_PORT_MAX=$((port + 9))
  export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
  export RABBITMQ_MNESIA_BASE="$dir/mnesia"
  export RABBITMQ_LOG_BASE="$dir/log"
  export RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
  export RABBITMQ_CONF_ENV_FILE="$dir/no-such-env-file"
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  NODE=$RABBITMQ_NODENAME
}

ctl() { "$RMQ_BIN/rabbitmqctl" -q -n "$NODE" "$@"; }

find_epmd() {
  local e
  for e in /usr/bin/epmd /usr/lib/erlang/erts-*/bin/epmd; do
    [ -x "$e" ] && { echo "$e"; return; }
  done
  die "epmd not found (is rabbitmq-server installed? run scripts/setup.sh)"
}

cmd_start() {
  local dir=$1 port=$2
  [ -x "$RMQ_BIN/rabbitmq-server" ] || die "rabbitmq-server is not installed; run scripts/setup.sh"
  mkdir -p "$dir/log" "$dir/mnesia"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/rabbitmq.pid" ] && kill -0 "$(cat "$dir/rabbitmq.pid")" 2>/dev/null; then
    die "a node is already running from $dir (pid $(cat "$dir/rabbitmq.pid"))"
  fi
  local p
  for p in $(seq "$port" $((port + 9))); do
    port_in_use "$p" && die "port $p is in use; choose another PORT (try: $0 free-port $port)"
  done
  echo "$port" >"$dir/port"
  node_env "$dir"
  if [ ! -f "$dir/.erlang.cookie" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/.erlang.cookie"
  fi
  chmod 400 "$dir/.erlang.cookie"
  cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$port
management.tcp.ip = 127.0.0.1
management.tcp.port = $((port + 1))
prometheus.tcp.ip = 127.0.0.1
prometheus.tcp.port = $((port + 2))
loopback_users.guest = true
log.console = false
log.file.level = warning
collect_statistics_interval = 500
CONF
  echo '[rabbitmq_management].' >"$dir/enabled_plugins"

  # A private epmd that we own by PID, so stopping the node can end it too.
  setsid "$(find_epmd)" -address 127.0.0.1 -port "$ERL_EPMD_PORT" >"$dir/log/epmd.out" 2>&1 &
  echo $! >"$dir/epmd.pid"

  setsid "$RMQ_BIN/rabbitmq-server" >"$dir/log/server.out" 2>&1 &
  echo $! >"$dir/server.pid"
  if ! timeout 150 "$RMQ_BIN/rabbitmqctl" -q -n "$NODE" wait --timeout 120 "$RABBITMQ_PID_FILE" >/dev/null 2>&1 ||
     ! timeout 150 "$RMQ_BIN/rabbitmqctl" -q -n "$NODE" await_startup >/dev/null 2>&1; then
    echo "broker: node did not start; last lines of its output:" >&2
    tail -n 30 "$dir/log/server.out" >&2 || true
    cmd_stop "$dir" || true
    exit 1
  fi
  # RabbitMQ 3.10's epmd monitor starts a whole Erlang VM every 60 s to make sure an epmd runs
  # (rabbit_nodes:ensure_epmd): half a second of both cores, which stalled everything else on the
  # machine for up to 50 ms (bench/README.md, eighth round). This node's epmd is private and
  # started above, so the monitor is stopped. If that fails the node still works, as before.
  ctl eval 'supervisor:terminate_child(rabbit_epmd_monitor_sup, rabbit_epmd_monitor).' >/dev/null 2>&1 ||
    echo "broker: could not stop the epmd monitor (the node runs with it)" >&2
  echo "broker: $NODE up, amqp://guest:guest@127.0.0.1:$port/ (management http://127.0.0.1:$((port + 1))/)"
}

cmd_stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  node_env "$dir" 2>/dev/null || return 0
  if [ -f "$RABBITMQ_PID_FILE" ] && kill -0 "$(cat "$RABBITMQ_PID_FILE")" 2>/dev/null; then
    timeout 60 "$RMQ_BIN/rabbitmqctl" -q -n "$NODE" stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1 ||
      kill -9 "$(cat "$RABBITMQ_PID_FILE")" 2>/dev/null || true
  fi
  local f pid
  for f in server.pid epmd.pid; do
    if [ -f "$dir/$f" ]; then
      pid=$(cat "$dir/$f")
      kill "$pid" 2>/dev/null || true
      rm -f "$dir/$f"
    fi
  done
  rm -f "$RABBITMQ_PID_FILE"
  echo "broker: stopped $NODE"
}

cmd_free_port() {
  local port=$1 p busy
  while [ "$port" -lt 65000 ]; do
    busy=0
    for p in $(seq "$port" $((port + 9))); do
      if port_in_use "$p"; then busy=1; break; fi
    done
    [ $busy = 0 ] && { echo "$port"; return; }
    port=$((port + 10))
  done
  die "no free port range found"
}

case "${1:-}" in
  start) [ $# -eq 3 ] || die "usage: $0 start DIR PORT"; cmd_start "$2" "$3" ;;
  stop) [ $# -eq 2 ] || die "usage: $0 stop DIR"; cmd_stop "$2" ;;
  ctl) [ $# -ge 3 ] || die "usage: $0 ctl DIR ARGS..."; node_env "$2"; shift 2; ctl "$@" ;;
  free-port) cmd_free_port "${2:-5700}" ;;
  *) die "usage: $0 start DIR PORT | stop DIR | ctl DIR ARGS... | free-port START" ;;
esac
