#!/usr/bin/env bash
# Configures and builds Herald into build/ (Release with debug info, warnings as errors).
# Extra arguments are passed to the build, e.g. `scripts/build.sh --target heraldd`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
launcher=()
if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHERALD_WERROR=ON "${launcher[@]}" >/dev/null
cmake --build build -j "$(nproc)" "$@"
