"""Data: SemanticKITTI files, rosbag2 conversion, bag index and training dataset (ROS-free)."""
