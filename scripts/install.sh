#!/usr/bin/env bash
# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
#
# Installs the Python environment from the profile's lock and builds the workspace with
# colcon: `scripts/install.sh`. Idempotent; when neither the lock nor the package's build
# inputs changed it only checks two stamps and returns. The profile is chosen as
# scripts/profile.sh says (SDXL_ROS_PROFILE, a sourced system ROS 2, or SDXL_ROS_DISTRO).
#
# - ros=wheels locks (kilted, jazzy, jazzy-py310libs): a venv with the PyPI ROS 2 wheels.
#   torch is not in the lock: pip installs torch==2.13.0 after the sync (from the local CPU
#   wheel where pip is set up to find one). A changed lock makes the venv anew.
# - ros=system locks (jetson, system): a venv on top of the sourced ROS 2 and the system's
#   torch (--system-site-packages); torch is never installed or replaced.
set -euo pipefail
# shellcheck source=scripts/profile.sh
source "$(dirname "$0")/profile.sh"
root="${SDXL_ROS_ROOT}"
fail() { echo "sdxl_ros: $*" >&2; exit 1; }

# --- Checks that fail with one line naming the fix, before anything is installed. ----------
[ -r "${SDXL_ROS_LOCK}" ] || fail "no lock for profile '${SDXL_ROS_PROFILE}'" \
  "(scripts/locks/${SDXL_ROS_PROFILE}.txt); set SDXL_ROS_PROFILE to kilted, jazzy," \
  "jazzy-py310libs, jetson or system"
tags="$(sed -n 's/^# sdxl_ros-lock: //p' "${SDXL_ROS_LOCK}")"
tag() { sed -n "s/.*\<$1=\([^ ]*\).*/\1/p" <<<"${tags}"; }
host_python="${SDXL_ROS_PYTHON:-python3}"
command -v "${host_python}" >/dev/null || fail "${host_python} not found; install Python" \
  "3.10 or newer, or name one with SDXL_ROS_PYTHON=/path/to/python3"
py_version="$("${host_python}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
py_ok="$("${host_python}" -c 'import sys; print(int(sys.version_info >= (3, 10)))')"
machine="$(uname -m)"
[ "${py_ok}" = 1 ] || fail "Python ${py_version} is too old: sdxl_ros needs Python 3.10 or" \
  "newer (JetPack 6 / Ubuntu 22.04); name one with SDXL_ROS_PYTHON=/path/to/python3"
want_py="$(tag python)"
want_machine="$(tag machine)"
if { [ "${want_py}" != "${py_version}" ] && [ "${want_py}" != 3.10+ ]; } ||
   { [ "${want_machine}" != any ] && [ "${want_machine}" != "${machine}" ]; }; then
  case "$(tag ros)" in
    wheels) hint="the PyPI ROS 2 wheels exist for Python 3.11 on x86_64 only; source a system"
      hint="${hint} ROS 2 and use SDXL_ROS_PROFILE=system (or jetson on a Jetson)" ;;
    *) hint="use SDXL_ROS_PROFILE=system (any system ROS 2, Python >= 3.10)" ;;
  esac
  fail "the '${SDXL_ROS_PROFILE}' lock is for Python ${want_py} on ${want_machine}, this is" \
    "Python ${py_version} on ${machine}; ${hint}"
fi
if [ "${SDXL_ROS_KIND}" = wheels ] && [ -n "${ROS_DISTRO:-}" ]; then
  fail "profile '${SDXL_ROS_PROFILE}' brings its own ROS 2, but ROS_DISTRO=${ROS_DISTRO} is" \
    "sourced; use a shell without it, or SDXL_ROS_PROFILE=system"
fi
if [ "${SDXL_ROS_KIND}" = system ]; then
  [ -n "${ROS_DISTRO:-}" ] || fail "profile '${SDXL_ROS_PROFILE}' uses a system ROS 2, but none" \
    "is sourced; source /opt/ros/<distro>/setup.bash first"
  "${host_python}" -c 'import torch' 2>/dev/null || fail "profile '${SDXL_ROS_PROFILE}' uses" \
    "the installed torch and never installs one, but ${host_python} cannot import torch;" \
    "install PyTorch for this Python first (on a Jetson: NVIDIA's JetPack 6 wheel, see README)"
fi

mkdir -p "${root}/log"
logfile="${root}/log/install.log"
venv="${SDXL_ROS_VENV}"
cache="${XDG_CACHE_HOME:-${HOME}/.cache}/sdxl_ros"
export UV_PYTHON_DOWNLOADS=never

# --- The venv, synced to the lock. ----------------------------------------------------------
# The venv lives outside the source tree and .venv-<profile> links to it: CMake refuses to
# export include directories (numpy's, from the ROS wheels) that lie inside the source tree.
if [ ! -e "${venv}" ]; then
  mkdir -p "${cache}/$(echo "${root}" | sha256sum | cut -c1-12)"
  ln -sfn "${cache}/$(echo "${root}" | sha256sum | cut -c1-12)/$(basename "${venv}")" "${venv}"
fi
venv_real="$(readlink -f "${venv}")"
py="${venv_real}/bin/python"
stamp="$(sha256sum <"${SDXL_ROS_LOCK}" | cut -d' ' -f1) ${SDXL_ROS_FLAVOR}"
stamp="${stamp} $(command -v "${host_python}") ${py_version}"

install_uv() {
  # uv from its own lock, in a tool venv shared by all checkouts.
  local tool="${cache}/uv-$(sha256sum <"${root}/scripts/locks/uv.txt" | cut -c1-12)"
  if [ ! -x "${tool}/bin/uv" ]; then
    rm -rf "${tool}"
    "${host_python}" -m venv "${tool}"
    "${tool}/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
      --no-deps -r "${root}/scripts/locks/uv.txt"
  fi
  uv="${tool}/bin/uv"
}

sync_venv() {
  # A ROS-wheel venv is always made anew: the wheels carry nested distributions (rclpy's own
  # metadata inside ros-rclpy, ...) that a lock does not list, and `uv pip sync` over an
  # existing venv deletes them (rclpy is gone). A venv made by another Python goes too.
  if [ "${SDXL_ROS_KIND}" = wheels ] || { [ -x "${py}" ] && [ "$("${py}" -c \
      'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" != "${py_version}" ]; }
  then
    rm -rf "${venv_real}"
  fi
  if [ ! -x "${py}" ]; then
    local flags=()
    [ "${SDXL_ROS_KIND}" = system ] && flags=(--system-site-packages)
    "${host_python}" -m venv "${flags[@]}" "${venv_real}"
  fi
  install_uv
  "${uv}" pip sync --python "${py}" --require-hashes "${SDXL_ROS_LOCK}"
  if [ "${SDXL_ROS_KIND}" = wheels ]; then
    # torch with pip, not uv: pip's configuration may name a local wheel (find-links, as on
    # this project's machines), where uv would fetch a CUDA build of GBs. The lock already
    # pins torch's dependencies, so pip adds torch alone (on a normal machine also PyPI's
    # CUDA packages for it). Nothing syncs this venv again, so torch stays.
    "${py}" -m pip install --disable-pip-version-check --quiet torch==2.13.0
    "${py}" "${root}/scripts/fix_wheel_cmake_paths.py"
  fi
  "${py}" -c 'import torch, diffusers, transformers' || {
    echo "the venv cannot import torch, diffusers and transformers"; return 1; }
}

if [ "$(cat "${venv_real}/.sdxl_ros_stamp" 2>/dev/null)" != "${stamp}" ]; then
  echo "sdxl_ros: installing the ${SDXL_ROS_PROFILE} profile (${SDXL_ROS_LOCK#"${root}/"})" \
    "into ${venv}" >&2
  rm -f "${venv_real}/.sdxl_ros_stamp"
  sync_venv >"${logfile}" 2>&1 || {
    tail -n 20 "${logfile}" >&2; fail "installing failed; the whole log is ${logfile}"; }
  echo "${stamp}" >"${venv_real}/.sdxl_ros_stamp"
fi

# --- The colcon build (--symlink-install: Python edits need no rebuild, new files do). -------
# Its stamp covers the venv (so another flavour's CMake cache is never reused), the build
# inputs, and the names of the installed files.
build_stamp="$(cd "${root}" && {
  cat "${venv_real}/.sdxl_ros_stamp" CMakeLists.txt package.xml
  find action msg srv -type f -exec cat {} + 2>/dev/null
  find sdxl_ros launch config resource scripts -path '*/__pycache__' -prune -o -print 2>/dev/null \
    | LC_ALL=C sort
} | sha256sum | cut -d' ' -f1)"
if [ "$(cat "${SDXL_ROS_BUILD}/.sdxl_ros_build_stamp" 2>/dev/null)" != "${build_stamp}" ]; then
  # From scratch: a symlink install keeps links to files that were moved or deleted.
  rm -rf "${SDXL_ROS_BUILD}" "${SDXL_ROS_INSTALL}"
  (
    if [ "${SDXL_ROS_KIND}" = wheels ]; then
      # The real path, not the link: CMake must see numpy's headers outside the sources.
      export AMENT_PREFIX_PATH="${venv_real}${AMENT_PREFIX_PATH:+:${AMENT_PREFIX_PATH}}"
    fi
    export PATH="${venv_real}/bin:${PATH}"
    cd "${root}"
    colcon --log-base "${root}/log/colcon" build --base-paths "${root}" \
      --build-base "${SDXL_ROS_BUILD}" --install-base "${SDXL_ROS_INSTALL}" \
      --symlink-install --event-handlers console_cohesion- summary-
  ) >>"${logfile}" 2>&1 || {
    tail -n 30 "${logfile}" >&2; fail "the colcon build failed; the whole log is ${logfile}"; }
  echo "${build_stamp}" >"${SDXL_ROS_BUILD}/.sdxl_ros_build_stamp"
fi
