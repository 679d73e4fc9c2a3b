#!/usr/bin/env bash
# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
#
# Runs a command (`scripts/confined.sh CMD ARGS...`) in the sdxl_ros environment with all
# ROS traffic confined to this host: inside a network namespace whose only interface is
# loopback, and with the loopback-only Fast DDS profile. Where namespaces are not allowed
# (not root, no unshare), the profile alone confines it. Used by test.sh and demo.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

if [ -z "${SDXL_ROS_CONFINED:-}" ]; then
  # Install and build out here: pip needs the package registry.
  set +u; source "${root}/scripts/env.sh"; set -u
  if unshare -n true 2>/dev/null; then
    SDXL_ROS_CONFINED=netns exec unshare -n "$0" "$@"
  fi
  echo "sdxl_ros: cannot create a network namespace here; relying on the loopback-only" \
    "Fast DDS profile alone" >&2
  export SDXL_ROS_CONFINED=profile
else
  if [ "${SDXL_ROS_CONFINED}" = netns ]; then ip link set lo up; fi
  set +u; source "${root}/scripts/env.sh"; set -u
fi
export SDXL_ROS_CONFINED
# A distinct domain per run keeps parallel runs on one host apart (shared memory crosses
# network namespaces).
export ROS_DOMAIN_ID=$(( (RANDOM % 100) + 1 ))
exec "$@"
