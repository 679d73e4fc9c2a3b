#!/usr/bin/env bash
# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
#
# Runs one command with all its ROS traffic confined to this host: `scripts/confined.sh CMD
# ARGS...` (e.g. `scripts/confined.sh bash` for a shell). The command runs inside a new network
# namespace whose only interface is loopback (`unshare -n`, needs root or user namespaces), in
# the environment of scripts/env.sh, which loads the loopback-only Fast DDS profile. Both are
# required: without the profile file or without a namespace it refuses to run anything.
# It installs nothing; run scripts/install.sh first (test.sh and demo.sh do).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
profile="${root}/config/fastdds_loopback_only.xml"
[ "$#" -gt 0 ] || { echo "usage: scripts/confined.sh CMD [ARGS...]" >&2; exit 2; }
[ -r "${profile}" ] || { echo "sdxl_ros: ${profile} is missing; refusing to start DDS" >&2
  exit 1; }
# As root a plain network namespace; otherwise one inside a user namespace (unshare -r).
unshare=(unshare -n)
unshare -n true 2>/dev/null || unshare=(unshare -r -n)
if ! "${unshare[@]}" true 2>/dev/null; then
  echo "sdxl_ros: cannot create a network namespace (unshare -n); run as root, or enable" \
    "user namespaces (sysctl kernel.unprivileged_userns_clone=1)" >&2
  exit 1
fi
# Inside: bring up lo (the only interface), set up the shell, pick a domain of its own (shared
# memory crosses network namespaces), then become the command.
exec "${unshare[@]}" bash -c '
  set -euo pipefail
  ip link set lo up
  set +u; source "$0/scripts/env.sh" || exit 1; set -u
  export SDXL_ROS_CONFINED=netns
  export ROS_DOMAIN_ID=$(( (RANDOM % 100) + 1 ))
  exec "$@"' "${root}" "$@"
