"""ROS 2 side of monoocc_ros: the node, message conversions, the rclpy bag replay and the
live evaluation's subscriber.

The only package that imports rclpy; everything it does beyond wiring lives in the ROS-free
core (predictor, grid, labels, camera, and the message codecs of :mod:`monoocc_ros.msgs`).

node.py (lifecycle, inputs, per-frame checks), node_outputs.py (publishers and /diagnostics),
model_loading.py (checkpoint -> predictor), params.py + param_table.py (parameters),
conversions.py (rclpy message wrappers), image.py, tf.py, diagnostics.py, map_publisher.py,
replay.py, live_eval.py, commands.py (the ``monoocc replay`` handler).
"""
