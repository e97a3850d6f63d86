#!/usr/bin/env bash
# Set up everything `make demo` and `make test` need, idempotently:
#   Debian packages, .venv with the pinned Python packages (ROS 2 Jazzy from PyPI wheels),
#   the include paths the manylinux ROS wheels expect, and a colcon build into build/ install/.
# A second run with nothing changed only checks stamps and lets colcon see nothing to do.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
STAMPS="$ROOT/.stamps"
# libtcmalloc-minimal4: see env.sh
APT_PACKAGES=(libusb-1.0-0 libvulkan1 mesa-vulkan-drivers libgl1 libegl1 libgomp1 libtcmalloc-minimal4)

say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[bootstrap] error:\033[0m %s\n' "$*" >&2; exit 1; }

# --- environment checks -------------------------------------------------------------------
if ! touch "$ROOT/.bootstrap-write-test" 2>/dev/null; then
  die "no write access to $ROOT: clone the repository somewhere you can write, or fix its permissions."
fi
rm -f "$ROOT/.bootstrap-write-test"

PYTHON=""
# MONOOCC_PYTHON picks the interpreter explicitly; otherwise the newest suitable one on PATH.
for cand in ${MONOOCC_PYTHON:-python3.11 python3.12 python3.10 python3}; do
  if command -v "$cand" >/dev/null 2>&1 &&
     "$cand" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] < (3, 13) else 1)' 2>/dev/null; then
    PYTHON="$(command -v "$cand")"; break
  fi
done
[ -n "$PYTHON" ] || die "Python 3.10-3.12 with venv is required (3.11 recommended); found: $("${MONOOCC_PYTHON:-python3}" --version 2>&1 || echo none)."
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || die "$PYTHON lacks the venv module: apt-get install python3-venv."

mkdir -p "$STAMPS"

# --- Debian packages (Open3D needs libusb to import and Vulkan to render offscreen) ----------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "Debian packages missing (${missing[*]}) and no root/sudo to install them."
    SUDO="sudo"
  fi
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq || die "apt-get update failed: no network to the Debian registry?"
  # apt's chatter (debconf notes) goes to the log; it is shown only when the install fails
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >"$STAMPS/apt.log" 2>&1 || { tail -n 20 "$STAMPS/apt.log" >&2; die "apt-get install ${missing[*]} failed (log: $STAMPS/apt.log)."; }
fi

# --- virtual environment -----------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV" || die "could not create the virtual environment $VENV."
fi
# The editable install maps the top-level packages present at install time: re-run on new ones.
deps_hash="$( (cat setup.py; ls -d */__init__.py) | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMPS/pip" 2>/dev/null)" != "$deps_hash" ]; then
  say "installing Python packages (torch CPU build, ROS 2 Jazzy wheels, tools); first run takes a few minutes"
  if ! "$VENV/bin/pip" install -q -e ".[ros,dev]" 2>"$STAMPS/pip.log"; then
    if ! "$VENV/bin/pip" index versions setuptools >/dev/null 2>&1; then
      die "pip could not reach the package registry (see $STAMPS/pip.log). Check network access to PyPI."
    fi
    tail -20 "$STAMPS/pip.log" >&2
    die "pip install failed (full log: $STAMPS/pip.log)."
  fi
  echo "$deps_hash" >"$STAMPS/pip"
fi

# --- include paths baked into the manylinux ROS wheels' CMake exports -------------------
py_include="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_include="$("$VENV/bin/python" -c 'import numpy, os; print(os.path.join(os.path.dirname(numpy.__file__), "_core", "include"))')"
link_path() {  # link_path TARGET LINK
  [ "$(readlink -f "$2" 2>/dev/null)" = "$(readlink -f "$1")" ] && return 0
  local SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO mkdir -p "$(dirname "$2")" && $SUDO ln -sfn "$1" "$2" ||
    die "could not create $2 -> $1 (needed by the ROS wheels' CMake files; needs root)."
}
link_path "$py_include" /opt/python/cp311-cp311/include/python3.11
# The venv lives inside the source tree, which CMake refuses as an exported include path: use the link.
NUMPY_INCLUDE_LINK=/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include
link_path "$np_include" "$NUMPY_INCLUDE_LINK"

# --- colcon build of this package (messages + Python package + node) ---------------------
# Always run: colcon is incremental, and install() picks up new Python files (a few seconds).
say "colcon build (messages from msg/, Python package, node, launch, config)"
(
  export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  colcon --log-base log build --base-paths "$ROOT" --symlink-install \
    --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF \
      -DPython3_NumPy_INCLUDE_DIR="$NUMPY_INCLUDE_LINK" \
    >"$STAMPS/colcon.log" 2>&1
) || { tail -30 "$STAMPS/colcon.log" >&2; die "colcon build failed (full log: $STAMPS/colcon.log)."; }
say "ready: source scripts/env.sh to use the environment"
