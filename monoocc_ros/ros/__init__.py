"""ROS 2 side of monoocc_ros: the node, message conversions, the rclpy bag replay and the
live evaluation's subscriber.

The only package that imports rclpy; everything it does beyond wiring lives in the ROS-free
core (predictor, grid, labels, camera).
"""
