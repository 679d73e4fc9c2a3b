#!/usr/bin/env bash
# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
#
# Creates the venv (once, or again when a requirements file changes) and builds the
# workspace with colcon. Called by scripts/env.sh, which sets SDXL_ROS_* first.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
: "${SDXL_ROS_VENV:?source scripts/env.sh instead}"
mkdir -p "${root}/log"
logfile="${root}/log/install_env.log"
req="${root}/scripts/requirements"

requirements=("${req}/python.txt")
if [ -n "${SDXL_ROS_WHEELS:-}" ]; then
  requirements+=("${req}/${SDXL_ROS_WHEELS}.txt" "${req}/build-tools.txt")
  venv_flags=()
else
  # System ROS: its rclpy and colcon live outside the venv.
  venv_flags=(--system-site-packages)
fi
stamp="$(cat "${requirements[@]}" | sha256sum | cut -d' ' -f1) ${SDXL_ROS_FLAVOR}"
py="${SDXL_ROS_VENV}/bin/python"

# The venv itself lives outside the source tree and .venv links to it: CMake refuses to
# export include directories (numpy's, from the ROS wheels) that lie inside the source tree.
if [ ! -e "${SDXL_ROS_VENV}" ]; then
  cache="${XDG_CACHE_HOME:-${HOME}/.cache}/sdxl_ros/$(echo "${root}" | sha256sum | cut -c1-12)"
  mkdir -p "${cache}"
  ln -sfn "${cache}/$(basename "${SDXL_ROS_VENV}")" "${SDXL_ROS_VENV}"
fi
if [ "$(cat "${SDXL_ROS_VENV}/.sdxl_ros_stamp" 2>/dev/null)" != "${stamp}" ]; then
  echo "sdxl_ros: installing the ${SDXL_ROS_FLAVOR} environment into ${SDXL_ROS_VENV} (once)" >&2
  {
    [ -x "${py}" ] || python3 -m venv "${venv_flags[@]}" "$(readlink -f "${SDXL_ROS_VENV}")"
    pip_install=("${py}" -m pip install --disable-pip-version-check --quiet)
    # Keep an installed torch (a Jetson's JetPack build, say); else the CPU/CUDA 2.13.0 wheel.
    "${py}" -c 'import torch' 2>/dev/null || "${pip_install[@]}" torch==2.13.0
    for r in "${requirements[@]}"; do "${pip_install[@]}" -r "${r}"; done
    if [ -n "${SDXL_ROS_WHEELS:-}" ]; then "${py}" "${root}/scripts/fix_wheel_cmake_paths.py"; fi
  } >"${logfile}" 2>&1 || { tail -n 20 "${logfile}" >&2; exit 1; }
  echo "${stamp}" >"${SDXL_ROS_VENV}/.sdxl_ros_stamp"
fi

# A build tree made by another ROS flavour cannot be reused (CMake caches absolute paths).
if [ "$(cat "${SDXL_ROS_BUILD}/.sdxl_ros_flavor" 2>/dev/null)" != "${SDXL_ROS_FLAVOR}" ]; then
  rm -rf "${SDXL_ROS_BUILD}" "${SDXL_ROS_INSTALL}"
fi
(
  if [ -n "${SDXL_ROS_WHEELS:-}" ]; then
    # The real path, not the .venv link: CMake must see numpy's headers outside the sources.
    venv_real="$(readlink -f "${SDXL_ROS_VENV}")"
    export AMENT_PREFIX_PATH="${venv_real}${AMENT_PREFIX_PATH:+:${AMENT_PREFIX_PATH}}"
    export PATH="${venv_real}/bin:${PATH}"
  fi
  cd "${root}"
  colcon --log-base "${root}/log/colcon" build --base-paths "${root}" \
    --build-base "${SDXL_ROS_BUILD}" --install-base "${SDXL_ROS_INSTALL}" \
    --symlink-install --event-handlers console_cohesion- summary-
) >>"${logfile}" 2>&1 || { tail -n 30 "${logfile}" >&2; exit 1; }
echo "${SDXL_ROS_FLAVOR}" >"${SDXL_ROS_BUILD}/.sdxl_ros_flavor"
