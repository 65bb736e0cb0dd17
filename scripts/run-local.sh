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
# A local SMTP server (aiosmtpd) that accepts every message into a Maildir, so e-mail jobs are
# really delivered somewhere you can read: .run/mail/new/.
smtp_port=${HERALD_LOCAL_SMTP_PORT:-2525}
mkdir -p "$root/.run"
/usr/bin/python3 -m aiosmtpd -n -l "127.0.0.1:$smtp_port" -c aiosmtpd.handlers.Mailbox "$root/.run/mail" \
  >"$root/.run/smtp.log" 2>&1 &
smtp_pid=$!
stop_all() {
  kill "$smtp_pid" 2>/dev/null || true
  bash "$root/scripts/broker.sh" stop "$state" || true
}
trap stop_all EXIT

export HERALD_BROKER_URL=${HERALD_BROKER_URL:-amqp://guest:guest@127.0.0.1:$port/}
export HERALD_CHANNELS_EMAIL_PORT=${HERALD_CHANNELS_EMAIL_PORT:-$smtp_port}
cat <<MSG

Herald is starting (config/herald.yaml, broker $HERALD_BROKER_URL).
In another terminal, publish an event:

  cd $root
  HERALD_BROKER_URL=$HERALD_BROKER_URL build/herald publish --type billing.invoice.paid --to u-1,u-2 --var amount="12.00 EUR"

Give a user an e-mail address first, and the mail lands in .run/mail/new/:

  echo '{"contacts":{"email":"ada@example.org"}}' | build/herald prefs set u-1

Or publish from any AMQP client: CloudEvents JSON to exchange herald.events with the event type
as routing key. Invalid events go to queue herald.events.invalid with header x-herald-reason.
Broker UI: http://127.0.0.1:$((port + 1))/ (guest/guest). Ctrl-C stops Herald and the broker.

MSG
build/heraldd --config config/herald.yaml &
heraldd_pid=$!
trap 'kill -TERM $heraldd_pid 2>/dev/null || true' INT TERM
wait $heraldd_pid || true
wait $heraldd_pid 2>/dev/null || true
