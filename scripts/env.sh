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
# numpy's OpenBLAS threads on thin (N,3)@(3,3) products cost more than they give on small machines.
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
