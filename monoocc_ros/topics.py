"""Topic and frame names of the bags written by ``monoocc convert-kitti`` and read by eval.

One place for the bag layout, so converter, dataset, evaluation and demo agree.
"""

IMAGE = "/camera/image_raw"
IMAGE_COMPRESSED = "/camera/image_raw/compressed"
CAMERA_INFO = "/camera/camera_info"
TF = "/tf"
TF_STATIC = "/tf_static"
POINTS = "/velodyne_points"
GROUND_TRUTH = "/ground_truth/occupancy"
# VoxFormer query proposals (official protocol), half resolution: labels 1 = proposed, 0 = not
QUERY_PROPOSALS = "/query_proposals"

ODOM_FRAME = "odom"
BASE_FRAME = "base_link"
LIDAR_FRAME = "velodyne"
CAMERA_FRAME = "camera_optical"
GRID_FRAME = LIDAR_FRAME

GRID_MSG_TYPE = "monoocc_ros/msg/SemanticOccupancyGrid"
