#!/usr/bin/env bash
# Installs every Debian 12 package Herald needs to build, run and test. Idempotent: packages that
# are already present are skipped, so a second run costs one dpkg query.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config ccache
  # libraries
  librabbitmq-dev libcurl4-openssl-dev libcpp-httplib-dev nlohmann-json3-dev libspdlog-dev
  libfmt-dev catch2 libsqlite3-dev libyaml-cpp-dev libcli11-dev libssl-dev libmstch-dev libboost-dev
  libhowardhinnant-date-dev tzdata libgoogle-perftools-dev
  # broker and tools the tests drive
  rabbitmq-server amqp-tools python3-pika curl procps webhook python3-aiosmtpd openssl
)
# Node.js runs the push tests' peers (tests/push); Debian's, unless a node is already installed.
if ! command -v node >/dev/null 2>&1; then PACKAGES+=(nodejs npm); fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing packages (${missing[*]}); run as root to install them" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The rabbitmq-server package tries to start a system node through invoke-rc.d; Herald runs its
# own private nodes, so a policy-rc.d forbids service starts for the duration of the install.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
