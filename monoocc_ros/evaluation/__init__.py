"""Evaluation of occupancy predictions on recorded drives.

* :mod:`~monoocc_ros.evaluation.offline`: deterministic, every ground-truth frame of a bag
  through the :class:`~monoocc_ros.predictor.Predictor` (``monoocc eval``).
* :mod:`~monoocc_ros.evaluation.live`: matching and scoring of the ROS node's output while a
  bag is replayed (``monoocc eval --live``), with rate, drops and end-to-end latency; the
  rclpy subscriber that feeds it is :mod:`monoocc_ros.ros.live_eval`.
* :mod:`~monoocc_ros.evaluation.report`: JSON, Table I Markdown, comparison, bar chart.
* :mod:`~monoocc_ros.evaluation.submission`: SemanticKITTI benchmark export and check.

Submodules are imported on use so that the ROS-free parts never load rclpy.
"""
