# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
#
# Sourced by install.sh and env.sh: picks the dependency profile and names its paths. It
# installs nothing, starts nothing and only sets SDXL_ROS_* variables.
#
# The profile is SDXL_ROS_PROFILE if set (kilted, jazzy, jetson, system);
# otherwise, with a system ROS 2 sourced (ROS_DISTRO set): jetson on aarch64, system elsewhere;
# otherwise the PyPI ROS wheels of SDXL_ROS_DISTRO (kilted by default, or jazzy).

SDXL_ROS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${SDXL_ROS_PROFILE:-}" ]; then
  if [ -n "${ROS_DISTRO:-}" ]; then
    if [ "$(uname -m)" = aarch64 ]; then SDXL_ROS_PROFILE=jetson; else SDXL_ROS_PROFILE=system; fi
  else
    SDXL_ROS_PROFILE="${SDXL_ROS_DISTRO:-kilted}"
  fi
fi
SDXL_ROS_LOCK="${SDXL_ROS_ROOT}/scripts/locks/${SDXL_ROS_PROFILE}.txt"
# ros=wheels (the lock holds ROS) or ros=system (a sourced ROS 2), from the lock's tag line.
SDXL_ROS_KIND="$(sed -n 's/^# sdxl_ros-lock:.* ros=\([a-z]*\).*/\1/p' "${SDXL_ROS_LOCK}" \
  2>/dev/null || true)"
# What a build tree depends on: a system ROS build differs per distro.
SDXL_ROS_FLAVOR="${SDXL_ROS_PROFILE}${ROS_DISTRO:+-${ROS_DISTRO}}"
[ "${SDXL_ROS_KIND}" = wheels ] && SDXL_ROS_FLAVOR="${SDXL_ROS_PROFILE}"
SDXL_ROS_VENV="${SDXL_ROS_ROOT}/.venv-${SDXL_ROS_PROFILE}"
SDXL_ROS_BUILD="${SDXL_ROS_ROOT}/build-${SDXL_ROS_PROFILE}"
SDXL_ROS_INSTALL="${SDXL_ROS_ROOT}/install-${SDXL_ROS_PROFILE}"
export SDXL_ROS_ROOT SDXL_ROS_PROFILE SDXL_ROS_LOCK SDXL_ROS_KIND SDXL_ROS_FLAVOR \
  SDXL_ROS_VENV SDXL_ROS_BUILD SDXL_ROS_INSTALL
