#!/usr/bin/env bash
# Set up everything napari-braggsim needs on a fresh Debian machine (as root) or an
# existing one: the system libraries headless Qt/OpenGL need (libxcb-cursor0 is what Qt 6
# needs under Xvfb), a virtual environment in .venv, torch 2.13.0 (the CPU wheel, installed
# first so pip never pulls a CUDA build), then the project with its test extras (napari with
# PyQt6, the Qt binding napari keeps supporting), and finally the fast simulation kernel and
# the noise module's nanoBragg-exact loops, compiled once into ~/.cache/braggsim.  No C
# compiler is needed anywhere: numba's wheel brings LLVM.  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="xvfb xauth libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0
libxcb-cursor0 libdbus-1-3 libfontconfig1"

missing=""
for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "== installing system packages:$missing"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    "$PYTHON" -m venv .venv
fi
echo "== installing torch 2.13.0 (CPU) and napari-braggsim[testing]"
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[testing]"
echo "== compiling the simulation kernel and the noise loops (numba, cached per user; seconds the first time)"
.venv/bin/python -c "from braggsim import native; native.warm_up(background=False); print('   ', 'ready' if native.ready() else native.unavailable_reason())"
.venv/bin/python -c "from braggsim import native; print('   ', 'noise loops ready' if native.warm_up_noise() else native.noise_unavailable_reason())"
echo "== setup done"
