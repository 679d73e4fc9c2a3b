#!/usr/bin/env bash
# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
#
# The whole test suite (the README's test command). Installs and builds the profile first
# (scripts/install.sh; seconds when nothing changed), then runs pytest confined to loopback
# (scripts/confined.sh). Extra arguments go to pytest,
# e.g. `scripts/test.sh -k node` or `scripts/test.sh -m "not reliability"`.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "${root}"
scripts/install.sh || exit 1
status=0
scripts/confined.sh bash -c 'echo "sdxl_ros: ${SDXL_ROS_FLAVOR} profile, confined by" \
  "${SDXL_ROS_CONFINED}, ROS_DOMAIN_ID=${ROS_DOMAIN_ID}"; exec python -m pytest "$@"' \
  pytest -p no:cacheprovider "$@" || status=$?
if [ "${status}" -eq 5 ]; then
  echo "sdxl_ros: pytest collected no tests; that is a failure" >&2
  status=1
fi
exit "${status}"
