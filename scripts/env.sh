# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
#
# Source me (bash): `source scripts/env.sh`. Afterwards the shell can run the node, the client
# and the tests against the built workspace, confined to loopback DDS.
#
# With a system ROS 2 sourced (ROS_DISTRO set) it uses that ROS and a venv for the Python
# dependencies; otherwise a venv with the ROS 2 wheels from PyPI: Kilted by default,
# Jazzy with SDXL_ROS_DISTRO=jazzy. Installing happens once; later runs take seconds.

_sdxl_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${ROS_DISTRO:-}" ] && [ -z "${SDXL_ROS_WHEELS:-}" ]; then
  export SDXL_ROS_FLAVOR="system-${ROS_DISTRO}"
  export SDXL_ROS_VENV="${_sdxl_root}/.venv-${ROS_DISTRO}"
  _sdxl_suffix=""
else
  export SDXL_ROS_WHEELS="${SDXL_ROS_DISTRO:-kilted}"
  export SDXL_ROS_FLAVOR="wheels-${SDXL_ROS_WHEELS}"
  case "${SDXL_ROS_WHEELS}" in
    kilted) _sdxl_suffix="" ;;
    jazzy) _sdxl_suffix="-jazzy" ;;
    *) echo "sdxl_ros: SDXL_ROS_DISTRO must be kilted or jazzy" >&2; return 1 ;;
  esac
  export SDXL_ROS_VENV="${_sdxl_root}/.venv${_sdxl_suffix}"
fi
export SDXL_ROS_BUILD="${_sdxl_root}/build${_sdxl_suffix}"
export SDXL_ROS_INSTALL="${_sdxl_root}/install${_sdxl_suffix}"

if ! "${_sdxl_root}/scripts/install_env.sh"; then
  echo "sdxl_ros: setting up the environment failed; see ${_sdxl_root}/log/install_env.log" >&2
  return 1
fi

# .venv links to the real venv outside the sources (see install_env.sh); use the real path.
SDXL_ROS_VENV="$(readlink -f "${SDXL_ROS_VENV}")"
# shellcheck disable=SC1091
source "${SDXL_ROS_VENV}/bin/activate"
if [ -n "${SDXL_ROS_WHEELS:-}" ]; then
  # The wheels install ROS packages into the venv prefix; ament and colcon look them up here.
  case ":${AMENT_PREFIX_PATH:-}:" in
    *":${SDXL_ROS_VENV}:"*) ;;
    *) export AMENT_PREFIX_PATH="${SDXL_ROS_VENV}${AMENT_PREFIX_PATH:+:${AMENT_PREFIX_PATH}}" ;;
  esac
fi
# shellcheck disable=SC1091
source "${SDXL_ROS_INSTALL}/setup.bash"
# sdxl_node and sdxl_generate by name, also where no `ros2` CLI exists (the PyPI wheels).
case ":${PATH}:" in
  *":${SDXL_ROS_INSTALL}/sdxl_ros/lib/sdxl_ros:"*) ;;
  *) export PATH="${SDXL_ROS_INSTALL}/sdxl_ros/lib/sdxl_ros:${PATH}" ;;
esac

# Network safety: Fast DDS may use only shared memory and UDP on loopback. A missing profile
# makes Fast DDS fall back to multicast on every interface silently, so refuse to go on.
export FASTDDS_DEFAULT_PROFILES_FILE="${_sdxl_root}/config/fastdds_loopback_only.xml"
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
unset _sdxl_root _sdxl_suffix
