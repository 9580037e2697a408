#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) and install moge2_ros into it (editable).
#
#   bash scripts/setup.sh
#
# Steps: pick a Python 3.10-3.12 interpreter ($PYTHON if set, else python3, python3.12, python3.11,
# python3.10), create .venv, install torch FIRST (`pip install torch==2.13.0`, so that pip does not resolve
# torch itself while installing the package), then `pip install -e ".[test,hub,exr]"`, then the ROS 2 Jazzy
# runtime wheels (rclpy, message packages; not pyproject dependencies, since a real ROS install provides them),
# and last scripts/build_msgs.sh, which builds the message package ros/moge2_ros_msgs into .venv.  A stamp file
# in .venv records a hash of pyproject.toml, the interpreter, the torch spec, the ROS wheel spec and the
# checkout path: when it matches, nothing is reinstalled; build_msgs.sh keeps its own stamp. A re-run takes
# about a second.
#
# With a system ROS 2 sourced (ROS_DISTRO set, /opt/ros/$ROS_DISTRO present) the ROS wheels and the message
# build are skipped: ROS comes from the system and the packages are built with colcon.
#
# Environment:
#   PYTHON               interpreter to use (must be 3.10-3.12)
#   MOGE2_TORCH_PIP_ARGS pip arguments for torch (default: torch==2.13.0), e.g. for a CUDA build:
#                        "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
#   MOGE2_EXTRAS         extras to install (default: test,hub,exr,onnx,bags,train,refine,report,cameras)
#   MOGE2_ROS            1 (default): install the ROS 2 wheels and build the messages; 0: skip both
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
TORCH_PIP_ARGS="${MOGE2_TORCH_PIP_ARGS:-torch==2.13.0}"
EXTRAS="${MOGE2_EXTRAS:-test,hub,exr,onnx,bags,train,refine,report,cameras}"
# ROS 2 Jazzy from pip wheels (see ../shared/notes/ROS_PIP.md): pinned through the ros-jazzy-* meta-packages.
ROS_WHEELS='ros-jazzy-rclpy[fastrtps] ros-jazzy-sensor-msgs ros-jazzy-std-msgs ros-jazzy-diagnostic-msgs'
USE_ROS="${MOGE2_ROS:-1}"
STAMP="$VENV/.moge2_ros_setup.stamp"
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

python_ok() {  # $1: interpreter; true when it runs and is 3.10-3.12
    "$1" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
    if [ -n "${PYTHON:-}" ]; then
        python_ok "$PYTHON" || die "PYTHON=$PYTHON is not a working Python 3.10-3.12 interpreter"
        echo "$PYTHON"
        return
    fi
    local cand
    for cand in python3 python3.12 python3.11 python3.10; do
        if command -v "$cand" >/dev/null 2>&1 && python_ok "$cand"; then
            command -v "$cand"
            return
        fi
    done
    die "no Python 3.10-3.12 interpreter found (tried python3, python3.12, python3.11, python3.10; found: $(python3 --version 2>&1 || echo 'no python3')). Install one or set PYTHON=/path/to/python3.x"
}

cd "$ROOT"
[ -f pyproject.toml ] || die "$ROOT does not look like the moge2_ros repository (no pyproject.toml)"

# 1. The virtual environment.
if [ -x "$VENV/bin/python" ] && python_ok "$VENV/bin/python"; then
    log "using existing $VENV ($("$VENV/bin/python" --version 2>&1))"
else
    if [ -e "$VENV" ]; then
        [ -f "$VENV/pyvenv.cfg" ] || die "$VENV exists but is not a virtual environment; move it away"
        log "$VENV is broken or has the wrong Python version: recreating it"
        rm -rf "$VENV"
    fi
    PY="$(find_python)"
    log "creating $VENV with $PY ($("$PY" --version 2>&1))"
    "$PY" -m venv "$VENV" || die "'$PY -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi
VPY="$VENV/bin/python"
# A colcon workspace may contain this checkout: keep colcon from crawling the venv (it holds ROS package.xml files).
touch "$VENV/COLCON_IGNORE"

# ---- ROS 2: which set-up (pip wheels, a system ROS, or none) ----
if [ "$USE_ROS" = 0 ]; then
    log "MOGE2_ROS=0: no ROS 2 wheels, no message build"
    ROS_WHEELS=''
elif [ -n "${ROS_DISTRO:-}" ] && [ -d "/opt/ros/$ROS_DISTRO" ]; then
    log "system ROS 2 '$ROS_DISTRO' is sourced: not installing the ROS 2 wheels (build the ROS packages with colcon)"
    USE_ROS=0
    ROS_WHEELS=''
fi
IMPORT_CHECK='import moge2_ros'
if [ -n "$ROS_WHEELS" ]; then
    IMPORT_CHECK='import moge2_ros, rclpy, sensor_msgs.msg, std_msgs.msg, diagnostic_msgs.msg'
fi
# The last step, also when the Python packages are up to date: the message package ros/moge2_ros_msgs, built
# into .venv by scripts/build_msgs.sh (which keeps its own stamp and returns at once when nothing changed).
build_ros_msgs() {
    if [ "$USE_ROS" != 0 ]; then
        bash "$ROOT/scripts/build_msgs.sh"
        colcon_tools
    fi
}
# colcon lives in its own small venv (.venv-colcon): installed into .venv it would downgrade setuptools there.
# The tests use it to check that a Jazzy workspace discovers and builds both packages
# (test/package/test_msgs_build.py).
colcon_tools() {
    local tools="$ROOT/.venv-colcon"
    if [ -x "$tools/bin/colcon" ] || command -v colcon >/dev/null 2>&1; then
        return 0  # already there, or a system ROS install brings its own colcon
    fi
    log "installing colcon into $tools (pip install colcon-common-extensions)"
    "$(find_python)" -m venv "$tools" || die "cannot create $tools"
    touch "$tools/COLCON_IGNORE"
    "$tools/bin/python" -m pip install --quiet colcon-common-extensions || die "pip install colcon-common-extensions failed"
}
# ---- end ROS 2 ----

# 2. Up to date already?
hash_inputs() {
    cat "$ROOT/pyproject.toml"
    printf '%s\n' "$("$VPY" -c 'import sys; print(sys.version)')" "$TORCH_PIP_ARGS" "$EXTRAS" "$ROOT" "$ROS_WHEELS"
}
WANT="$(hash_inputs | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/moge2-ros" ] \
        && "$VPY" -c "$IMPORT_CHECK" >/dev/null 2>&1; then
    log "up to date (stamp matches pyproject.toml): nothing to install"
    build_ros_msgs
    exit 0
fi
rm -f "$STAMP"

# 3. torch first (CPU build by default), then the package with its extras.
log "installing torch: pip install $TORCH_PIP_ARGS"
# shellcheck disable=SC2086  # word splitting of the pip arguments is intended
"$VPY" -m pip install $TORCH_PIP_ARGS
log "installing moge2_ros (editable) with extras [$EXTRAS]: pip install -e \".[$EXTRAS]\""
"$VPY" -m pip install -e ".[$EXTRAS]"

[ -x "$VENV/bin/moge2-ros" ] || die "installation finished but $VENV/bin/moge2-ros is missing"
"$VPY" -c 'import torch, moge2_ros; print(f"[setup] torch {torch.__version__}, moge2_ros {moge2_ros.__version__}")'

# ---- ROS 2 runtime wheels (pip set-up only) ----
if [ -n "$ROS_WHEELS" ]; then
    log "installing the ROS 2 Jazzy wheels: pip install $ROS_WHEELS"
    read -ra ros_wheels <<< "$ROS_WHEELS"  # split on spaces, no globbing of the [fastrtps] brackets
    "$VPY" -m pip install "${ros_wheels[@]}"
    "$VPY" -c "$IMPORT_CHECK" || die "the ROS 2 wheels were installed but '$IMPORT_CHECK' fails"
fi
# ---- end ROS 2 ----

echo "$WANT" > "$STAMP"
# 4. The ROS 2 message package (see build_ros_msgs above).
build_ros_msgs

log "done: activate with 'source .venv/bin/activate' or call .venv/bin/moge2-ros directly"
