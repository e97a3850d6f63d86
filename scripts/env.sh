# Source this file (bash) to use the project's environment: the venv, the colcon install,
# and DDS kept on this machine.
_monoocc_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$_monoocc_root/.venv/bin/activate"
export AMENT_PREFIX_PATH="$_monoocc_root/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# shellcheck disable=SC1091
. "$_monoocc_root/install/setup.bash"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
unset _monoocc_root
# glibc maps every full-grid tensor (2M voxels x 20 classes) fresh from the kernel and zeroes
# it page by page; tcmalloc keeps freed blocks, which makes a CPU training step about 2x faster.
for _monoocc_tcmalloc in /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4; do break; done
if [ -f "$_monoocc_tcmalloc" ] && [[ ":${LD_PRELOAD:-}:" != *":$_monoocc_tcmalloc:"* ]]; then
  export LD_PRELOAD="$_monoocc_tcmalloc${LD_PRELOAD:+:$LD_PRELOAD}"
  # keep freed pages for the next step instead of handing them back to be zeroed again,
  # and don't print a line for every allocation over 1 GB (monoocc_s makes several)
  export TCMALLOC_RELEASE_RATE="${TCMALLOC_RELEASE_RATE:-0}"
  export TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD="${TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD:-1099511627776}"
fi
unset _monoocc_tcmalloc
# numpy's OpenBLAS threads on thin (N,3)@(3,3) products cost more than they give on small machines.
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
