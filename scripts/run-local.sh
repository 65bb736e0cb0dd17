#!/usr/bin/env bash
# Runs Herald locally, from a fresh Debian 12 machine: installs packages, builds, starts a private
# RabbitMQ node (data in .run/broker, AMQP on 127.0.0.1:5680) and heraldd with every role using
# config/herald.yaml. Ctrl-C stops heraldd, then the broker.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash scripts/setup.sh
bash scripts/build.sh --target heraldd herald-cli

port=${HERALD_LOCAL_BROKER_PORT:-5680}
state="$root/.run/broker"
mkdir -p "$state" var
if [ -f "$state/rabbitmq.pid" ] && kill -0 "$(cat "$state/rabbitmq.pid")" 2>/dev/null; then
  echo "run-local: reusing the broker already running from $state"
else
  bash scripts/broker.sh start "$state" "$port"
fi
stop_broker() { bash "$root/scripts/broker.sh" stop "$state" || true; }
trap stop_broker EXIT

export HERALD_BROKER_URL=${HERALD_BROKER_URL:-amqp://guest:guest@127.0.0.1:$port/}
cat <<MSG

Herald is starting (config/herald.yaml, broker $HERALD_BROKER_URL).
In another terminal, publish an event:

  cd $root
  HERALD_BROKER_URL=$HERALD_BROKER_URL build/herald publish --type billing.invoice.paid --to u-1,u-2 --var amount="12.00 EUR"

or from any AMQP client: publish CloudEvents JSON to exchange herald.events with the event type
as routing key. Invalid events go to queue herald.events.invalid with header x-herald-reason.
Broker UI: http://127.0.0.1:$((port + 1))/ (guest/guest). Ctrl-C stops Herald and the broker.

MSG
build/heraldd --config config/herald.yaml &
heraldd_pid=$!
trap 'kill -TERM $heraldd_pid 2>/dev/null || true' INT TERM
wait $heraldd_pid || true
wait $heraldd_pid 2>/dev/null || true
