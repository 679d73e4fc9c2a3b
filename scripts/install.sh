#!/usr/bin/env bash
# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
#
# Installs the Python environment from the profile's lock and builds the workspace with
# colcon: `scripts/install.sh`. Idempotent; when neither the lock nor the package's build
# inputs changed it only checks two stamps and returns. The profile is chosen as
# scripts/profile.sh says (SDXL_ROS_PROFILE, a sourced system ROS 2, or SDXL_ROS_DISTRO).
#
# - ros=wheels locks (kilted, jazzy): a venv with the PyPI ROS 2 wheels. torch is not in the
#   lock: pip installs torch==2.13.0 after the sync (from the local CPU wheel where pip is set
#   up to find one). A changed lock makes the venv anew.
# - ros=system profiles (jetson, system): a venv on top of the sourced ROS 2 and the torch the
#   Python already has (--system-site-packages); torch is never installed or replaced. Before
#   anything is installed, scripts/torch_check.py imports that torch and picks the lock for it
#   (torch >= 2.6.0: <profile>.txt; 2.3 to 2.5: <profile>-torch2.3-2.5.txt) or refuses with one
#   line. Where torch lives in another environment than the system site-packages (the
#   jetson-containers /opt/venv, a conda env), a .pth file adds that environment's
#   site-packages behind the venv's own: its torch is used, nothing is installed into it.
#
# SDXL_ROS_PYTHON names the Python to build on (default python3). SDXL_ROS_NO_ROS=1 installs
# the engine side only (no ROS needed, no colcon build): the engine CLI and every test that
# needs no ROS; CI runs it on Python 3.10. SDXL_ROS_MACHINE stands in for `uname -m` (CI checks
# the jetson profile on x86_64 with it).
set -euo pipefail
# shellcheck source=scripts/profile.sh
source "$(dirname "$0")/profile.sh"
root="${SDXL_ROS_ROOT}"
fail() { echo "sdxl_ros: $*" >&2; exit 1; }

# --- Checks that fail with one line naming the fix, before anything is installed. ----------
[ -r "${SDXL_ROS_LOCK}" ] || fail "no lock for profile '${SDXL_ROS_PROFILE}'" \
  "(scripts/locks/${SDXL_ROS_PROFILE}.txt); set SDXL_ROS_PROFILE to kilted, jazzy, jetson or" \
  "system"
tags="$(sed -n 's/^# sdxl_ros-lock: //p' "${SDXL_ROS_LOCK}")"
tag() { sed -n "s/.*\<$1=\([^ ]*\).*/\1/p" <<<"${tags}"; }
host_python="${SDXL_ROS_PYTHON:-python3}"
command -v "${host_python}" >/dev/null || fail "${host_python} not found; install Python" \
  "3.10 or newer, or name one with SDXL_ROS_PYTHON=/path/to/python3"
py_version="$("${host_python}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
py_ok="$("${host_python}" -c 'import sys; print(int(sys.version_info >= (3, 10)))')"
machine="${SDXL_ROS_MACHINE:-$(uname -m)}"
no_ros="${SDXL_ROS_NO_ROS:-0}"
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
if [ "${SDXL_ROS_KIND}" = system ] && [ "${no_ros}" != 1 ]; then
  [ -n "${ROS_DISTRO:-}" ] || fail "profile '${SDXL_ROS_PROFILE}' uses a system ROS 2, but none" \
    "is sourced; source /opt/ros/<distro>/setup.bash first (or SDXL_ROS_NO_ROS=1: engine only)"
fi

venv="${SDXL_ROS_VENV}"
cache="${XDG_CACHE_HOME:-${HOME}/.cache}/sdxl_ros"
# The venv lives outside the source tree and .venv-<profile> links to it: CMake refuses to
# export include directories (numpy's, from the ROS wheels) that lie inside the source tree.
if [ -L "${venv}" ] || [ -e "${venv}" ]; then
  venv_real="$(readlink -f "${venv}")"
else
  venv_real="${cache}/$(echo "${root}" | sha256sum | cut -c1-12)/$(basename "${venv}")"
fi

# --- A system torch: checked, and its lock picked, before anything is installed. -----------
# The check imports torch (seconds); it runs again when the torch distribution, the check or
# the profile's locks changed (a torch replaced after the install gets its own lock).
torch_site=""
if [ "${SDXL_ROS_KIND}" = system ]; then
  torch_id="$("${host_python}" -c 'import importlib.metadata as m
d = m.distribution("torch"); print(d.version, d.locate_file(""))' 2>/dev/null || echo none)"
  check_cache="${venv_real}/.sdxl_ros_torch_check"
  check_key="${torch_id} ${machine} $(cat "${root}/scripts/torch_check.py" \
    "${root}/scripts/locks/${SDXL_ROS_PROFILE}"*.txt | sha256sum | cut -c1-16)"
  if [ "$(head -n1 "${check_cache}" 2>/dev/null)" = "${check_key}" ]; then
    check="$(tail -n +2 "${check_cache}")"
  else
    check="$("${host_python}" "${root}/scripts/torch_check.py" --profile "${SDXL_ROS_PROFILE}" \
      --machine "${machine}")" || exit 1
    rm -f "${check_cache}"
  fi
  SDXL_ROS_LOCK="$(sed -n 's/^lock=//p' <<<"${check}")"
  torch_site="$(sed -n 's/^torch_site=//p' <<<"${check}")"
  if [ ! -r "${check_cache}" ]; then
    echo "sdxl_ros: $(sed -n 's/^reason=//p' <<<"${check}")" >&2
    sed -n 's/^note=/sdxl_ros: note: /p' <<<"${check}" >&2
  fi
fi

mkdir -p "${root}/log"
logfile="${root}/log/install.log"
export UV_PYTHON_DOWNLOADS=never

# --- The venv, synced to the lock. ----------------------------------------------------------
if [ ! -e "${venv}" ]; then
  mkdir -p "$(dirname "${venv_real}")"
  ln -sfn "${venv_real}" "${venv}"
fi
py="${venv_real}/bin/python"

stamp="$(sha256sum <"${SDXL_ROS_LOCK}" | cut -d' ' -f1) ${SDXL_ROS_FLAVOR} no_ros=${no_ros}"
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
  local from
  from="$(command -v "${host_python}")"
  if [ "${SDXL_ROS_KIND}" = wheels ] ||
     [ "$(cat "${venv_real}/.sdxl_ros_python" 2>/dev/null)" != "${from}" ]; then
    rm -rf "${venv_real}"
  fi
  if [ ! -x "${py}" ]; then
    local flags=()
    [ "${SDXL_ROS_KIND}" = system ] && flags=(--system-site-packages)
    "${host_python}" -m venv "${flags[@]}" "${venv_real}"
    echo "${from}" >"${venv_real}/.sdxl_ros_python"
  fi
  install_uv
  local site
  site="$("${py}" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
  rm -f "${site}/_sdxl_ros_torch_env.pth"
  "${uv}" pip sync --python "${py}" --require-hashes "${SDXL_ROS_LOCK}"
  if [ -n "${torch_site}" ]; then
    if ! "${py}" -c 'import sys; sys.exit(sys.argv[1] not in sys.path)' "${torch_site}"; then
      # torch lives in an environment the venv does not see (/opt/venv, conda): add that
      # site-packages behind the venv's own, so the lock's packages come first.
      echo "${torch_site}" >"${site}/_sdxl_ros_torch_env.pth"
    fi
    local seen
    seen="$("${py}" -c 'import os, torch
print(os.path.dirname(os.path.dirname(torch.__file__)))')"
    [ "${seen}" = "${torch_site}" ] || {
      echo "the venv imports torch from ${seen}, not ${torch_site}"; return 1; }
  fi
  if [ "${SDXL_ROS_KIND}" = wheels ]; then
    # torch with pip, not uv: pip's configuration may name a local wheel (find-links, as on
    # this project's machines), where uv would fetch a CUDA build of GBs. The lock already
    # pins torch's dependencies, so pip adds torch alone (on a normal machine also PyPI's
    # CUDA packages for it). Nothing syncs this venv again, so torch stays.
    "${py}" -m pip install --disable-pip-version-check --quiet torch==2.13.0
    "${py}" "${root}/scripts/fix_wheel_cmake_paths.py"
  fi
  # torch, transformers and diffusers import and accept each other (one line where not).
  PYTHONPATH="${root}" "${py}" -c 'import sys
from sdxl_ros.engine.torch_features import main; sys.exit(main())'
}

if [ "$(cat "${venv_real}/.sdxl_ros_stamp" 2>/dev/null)" != "${stamp}" ]; then
  echo "sdxl_ros: installing the ${SDXL_ROS_PROFILE} profile (${SDXL_ROS_LOCK#"${root}/"})" \
    "into ${venv}" >&2
  rm -f "${venv_real}/.sdxl_ros_stamp"
  sync_venv >"${logfile}" 2>&1 || {
    # The venv's own one-line verdict where there is one, else the log's tail.
    grep '^sdxl_ros: ' "${logfile}" >&2 || tail -n 20 "${logfile}" >&2
    fail "installing failed; the whole log is ${logfile}"; }
  echo "${stamp}" >"${venv_real}/.sdxl_ros_stamp"
fi
if [ "${SDXL_ROS_KIND}" = system ] && [ ! -r "${check_cache}" ]; then
  printf '%s\n%s\n' "${check_key}" "${check}" >"${check_cache}"
fi
[ "${no_ros}" != 1 ] || exit 0

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
