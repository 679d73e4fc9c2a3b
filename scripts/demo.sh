#!/usr/bin/env bash
# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
#
# The README's demo: starts sdxl_node on the `tiny` preset (CPU, no weight files), asks it for
# an image with the sdxl_generate client, writes demo.png (or the path given), stops the node.
# Installs and builds first (scripts/install.sh), then runs confined to loopback
# (scripts/confined.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
output="$(realpath -m "${1:-demo.png}")"
cd "${root}"
scripts/install.sh
exec scripts/confined.sh bash -c '
  set -euo pipefail
  sdxl_node --ros-args --params-file config/tiny.yaml --log-level warn &
  node=$!
  trap "kill -TERM ${node} 2>/dev/null; wait ${node} || true" EXIT
  sdxl_generate "a robot in a garden, golden hour" --seed 7 --output "$1" --timeout 60
' demo "${output}"
