#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs packages, builds, starts a
# private RabbitMQ node on free loopback ports, runs ctest, and stops the node whatever happens.
# Arguments go to ctest, e.g. `scripts/test.sh -R intake`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash scripts/setup.sh
bash scripts/build.sh

# The npm packages the push tests run (pinned by tests/push/package-lock.json), installed again
# only when the lock file changed since the last install.
push=tests/push
if ! cmp -s "$push/package-lock.json" "$push/node_modules/.herald-installed-lock"; then
  (cd "$push" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$push/package-lock.json" "$push/node_modules/.herald-installed-lock"
fi

state=$(mktemp -d /tmp/herald-test-broker.XXXXXX)
cleanup() {
  bash "$root/scripts/broker.sh" stop "$state" >/dev/null 2>&1 || true
  rm -rf "$state" /tmp/herald-test-[0-9]*
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(bash scripts/broker.sh free-port 5800)
bash scripts/broker.sh start "$state" "$port"
export TEST_BROKER_PORT=$port TEST_BROKER_DIR=$state

cd build
ctest --output-on-failure -j "$(nproc)" "$@"
