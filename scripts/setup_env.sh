#!/usr/bin/env bash
# Create (or reuse) the project-local virtualenv .venv with pinned dependencies and the
# package installed. Fast when nothing changed (a stamp file keyed on the inputs).
# When a system ROS 2 is sourced (ROS_DISTRO set, /opt/ros/...), the venv sees the system
# site-packages and the ROS 2 wheels are not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LATENT_VS_VENV:-.venv}
PY=${PYTHON:-python3}
ros_mode=wheels
if [ -n "${ROS_DISTRO:-}" ] && [ -d "/opt/ros/${ROS_DISTRO}" ]; then ros_mode=system; fi
# The key hashes the files' contents (committed or not): requirements, setup, and every file
# the (non-editable) install copies.
key=$( (cat requirements.txt requirements-ros.txt setup.py package.xml; echo "$ros_mode"; \
        find latent_vs launch config models worlds -type f ! -name '*.pyc' -print0 | LC_ALL=C sort -z \
        | xargs -0 sha1sum) | sha1sum | cut -c1-16)
stamp="$VENV/.latent_vs_stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then exit 0; fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV ($ros_mode ROS 2)"
  if [ "$ros_mode" = system ]; then "$PY" -m venv --system-site-packages "$VENV"; else "$PY" -m venv "$VENV"; fi
fi
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
echo "[setup] installing pinned dependencies (first time: ~2 min)"
quiet "${pip[@]}" -r requirements.txt
if [ "$ros_mode" = wheels ]; then quiet "${pip[@]}" -r requirements-ros.txt; fi
# A regular (non-editable) install: editable installs drop data_files (launch, config, models).
quiet "${pip[@]}" --no-deps --no-build-isolation --force-reinstall . >/dev/null
# `ros2 run latent_vs <node>` looks in <prefix>/lib/latent_vs (pip puts scripts in bin/)
mkdir -p "$VENV/lib/latent_vs"
for exe in encoder_node controller_node sim_camera_node; do ln -sf "../../bin/$exe" "$VENV/lib/latent_vs/$exe"; done
# `ign sdf -k` checks worlds/poster.sdf in the tests (Gazebo itself is not packaged for Debian
# 12). Installed with apt-get when running as root; otherwise that one test is skipped.
if ! command -v ign >/dev/null 2>&1 && [ -z "${LATENT_VS_NO_APT:-}" ] && command -v apt-get >/dev/null 2>&1 \
   && [ "$(id -u)" = 0 ]; then
  echo "[setup] installing ignition-tools + libsdformat-dev (apt-get) for the SDF world check"
  apt_install() { DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends \
                  ignition-tools libsdformat-dev >/dev/null 2>&1; }
  apt_install || { timeout 300 apt-get update -q >/dev/null 2>&1 && apt_install; } \
    || echo "[setup] could not install ignition-tools: the SDF world check will be skipped"
fi
echo "$key" > "$stamp"
echo "[setup] ready: $VENV"
