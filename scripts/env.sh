# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
#
# Source me (bash) after scripts/install.sh: `source scripts/env.sh`. It only sets up the
# shell (it installs and builds nothing): the profile's venv, the built workspace, sdxl_node
# and sdxl_generate on PATH, Fast DDS limited to loopback, no model hub. It does not create a
# network namespace; for that run commands through scripts/confined.sh.

# shellcheck source=scripts/profile.sh
source "$(dirname "${BASH_SOURCE[0]}")/profile.sh"
if [ ! -r "${SDXL_ROS_VENV}/.sdxl_ros_stamp" ] || { [ "${SDXL_ROS_NO_ROS:-0}" != 1 ] &&
   [ ! -r "${SDXL_ROS_INSTALL}/setup.bash" ]; }; then
  echo "sdxl_ros: the ${SDXL_ROS_PROFILE} profile is not installed; run scripts/install.sh" >&2
  return 1
fi
# Network safety: Fast DDS may use only shared memory and UDP on loopback. A missing profile
# makes Fast DDS fall back to multicast on every interface silently, so refuse to go on.
export FASTDDS_DEFAULT_PROFILES_FILE="${SDXL_ROS_ROOT}/config/fastdds_loopback_only.xml"
if [ ! -r "${FASTDDS_DEFAULT_PROFILES_FILE}" ]; then
  echo "sdxl_ros: ${FASTDDS_DEFAULT_PROFILES_FILE} is missing; refusing to start DDS" >&2
  return 1
fi
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export ROS_AUTOMATIC_DISCOVERY_RANGE=SYSTEM_DEFAULT
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((RANDOM % 100 + 1))}"
# No model hub, ever: weights come from local files or presets.
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export HF_HUB_DISABLE_TELEMETRY=1

# .venv-<profile> links to the real venv outside the sources; use the real path.
SDXL_ROS_VENV="$(readlink -f "${SDXL_ROS_VENV}")"
# shellcheck disable=SC1091
source "${SDXL_ROS_VENV}/bin/activate"
if [ "${SDXL_ROS_KIND}" = wheels ]; then
  # The wheels install ROS packages into the venv prefix; ament and colcon look them up here.
  case ":${AMENT_PREFIX_PATH:-}:" in
    *":${SDXL_ROS_VENV}:"*) ;;
    *) export AMENT_PREFIX_PATH="${SDXL_ROS_VENV}${AMENT_PREFIX_PATH:+:${AMENT_PREFIX_PATH}}" ;;
  esac
fi
if [ "${SDXL_ROS_NO_ROS:-0}" = 1 ]; then
  # Engine side only (scripts/install.sh with SDXL_ROS_NO_ROS=1): the sources, no ROS build.
  export PYTHONPATH="${SDXL_ROS_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
else
  # shellcheck disable=SC1091
  source "${SDXL_ROS_INSTALL}/setup.bash"
fi
# Fast DDS 2.x (libfastrtps: Humble, Jazzy) reads only FASTRTPS_DEFAULT_PROFILES_FILE; Fast DDS
# 3 (libfastdds: Kilted) reads FASTDDS_DEFAULT_PROFILES_FILE and warns on every start when the
# old name is set. Set the old name only where the library on the prefix path is 2.x.
unset FASTRTPS_DEFAULT_PROFILES_FILE
sdxl_ros_fastdds="$(IFS=:; for prefix in ${AMENT_PREFIX_PATH:-}; do
  ls "${prefix}"/lib/libfastdds.so* "${prefix}"/lib/libfastrtps.so* 2>/dev/null
done | head -n1 || true)"
case "$(basename "${sdxl_ros_fastdds:-none}")" in
  libfastrtps.so*) export FASTRTPS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE}" ;;
esac
unset sdxl_ros_fastdds
# sdxl_node and sdxl_generate by name, also where no `ros2` CLI exists (the PyPI wheels).
case ":${PATH}:" in
  *":${SDXL_ROS_INSTALL}/sdxl_ros/lib/sdxl_ros:"*) ;;
  *) export PATH="${SDXL_ROS_INSTALL}/sdxl_ros/lib/sdxl_ros:${PATH}" ;;
esac
