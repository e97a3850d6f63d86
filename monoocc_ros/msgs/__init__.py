"""ROS-free message codecs, shared by the bag tools (``rosbags`` objects) and the node (rclpy objects).

Numpy on one side, message fields on the other; nothing here imports rclpy, so the converter,
the dataset, the offline evaluation and the tests use the same code as the node.

==========================  =======================================================================
module                      concept
==========================  =======================================================================
:mod:`.bagtypes`            the ``rosbags`` typestore: ROS 2 Jazzy + ``SemanticOccupancyGrid``
:mod:`.bag_messages`        numpy -> ``rosbags`` messages (image, camera info, TF, LiDAR cloud, grid)
:mod:`.decode`              either library's messages -> numpy (image, camera info, TF, cloud, grid)
:mod:`.image`               the one image decoder (raw encodings, Bayer, PNG/JPEG) and its size checks
:mod:`.grid`                the field values of a ``SemanticOccupancyGrid``
:mod:`.cloud`               the two PointCloud2 layouts: LiDAR points, occupied voxels
:mod:`.markers`             per-class cube markers and their ``MarkerArray`` CDR bytes
==========================  =======================================================================

Built on the project's single implementations of time stamps (:mod:`monoocc_ros.stamps`),
rotations (:mod:`monoocc_ros.transforms`) and the camera rule (:mod:`monoocc_ros.camera`), which
stay in the core's top level because the model, the map and the data layer use them too. The rclpy
wrappers are in :mod:`monoocc_ros.ros.conversions`, the cv_bridge path in :mod:`monoocc_ros.ros.image`.
"""
