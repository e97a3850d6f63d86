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
  # Don't print a line for every allocation over 1 GB (monoocc_s makes several).
  export TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD="${TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD:-1099511627776}"
  # TCMALLOC_RELEASE_RATE is left at tcmalloc's default here: this environment also runs the
  # long-lived node, whose memory must shrink again after a spike; with 0 it never would.
  # Short batch jobs that re-allocate the same tensors every step (tests, the demo's training)
  # set TCMALLOC_RELEASE_RATE=0 themselves (scripts/run_tests.sh, scripts/run_demo.sh).
fi
unset _monoocc_tcmalloc
# numpy's OpenBLAS threads on thin (N,3)@(3,3) products cost more than they give on small machines.
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
