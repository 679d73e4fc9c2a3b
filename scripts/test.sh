#!/usr/bin/env bash
# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
#
# The whole test suite (README's test command). Sets up the environment itself, then runs
# pytest inside a network namespace whose only interface is loopback, so no DDS packet can
# leave this host; where namespaces are not allowed, the loopback Fast DDS profile alone
# confines it. Extra arguments go to pytest (e.g. `-k node`, `-m "not reliability"`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "${root}"

if [ -z "${SDXL_ROS_CONFINED:-}" ]; then
  # Install and build out here: pip needs the package registry.
  # shellcheck disable=SC1091
  set +u; source scripts/env.sh; set -u
  if unshare -n true 2>/dev/null; then
    SDXL_ROS_CONFINED=netns exec unshare -n "$0" "$@"
  fi
  echo "sdxl_ros: cannot create a network namespace here; relying on the loopback-only" \
    "Fast DDS profile alone" >&2
  export SDXL_ROS_CONFINED=profile
else
  ip link set lo up
  # shellcheck disable=SC1091
  set +u; source scripts/env.sh; set -u
fi
export SDXL_ROS_CONFINED
# A distinct domain per run keeps parallel runs on one host apart (shared memory crosses
# network namespaces).
export ROS_DOMAIN_ID=$(( (RANDOM % 100) + 1 ))
echo "sdxl_ros: ${SDXL_ROS_FLAVOR}, confined by ${SDXL_ROS_CONFINED}, ROS_DOMAIN_ID=${ROS_DOMAIN_ID}"
status=0
python -m pytest -p no:cacheprovider "$@" || status=$?
if [ "${status}" -eq 5 ]; then
  echo "sdxl_ros: pytest collected no tests; that is a failure" >&2
  status=1
fi
exit "${status}"
