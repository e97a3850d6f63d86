"""Shared by the node tests: one way to spin a node and its peers on a background executor and tear
them down, and a stand-in logger that records the error lines a node writes."""

from __future__ import annotations

import threading
from contextlib import contextmanager

from rclpy.executors import SingleThreadedExecutor


@contextmanager
def spinning(node, *peers, deactivate: bool = True):
    """Spin ``node`` and ``peers`` on one single-threaded executor in a thread while the block runs
    (the executor the node's own ``main()`` spins; its callbacks are short, the model has its own thread).

    On exit, whatever the block raised: stop the executor, deactivate ``node`` (a lifecycle node;
    ignored where it is not active) when ``deactivate``, and destroy every node.
    """
    executor = SingleThreadedExecutor()
    for n in (node, *peers):
        executor.add_node(n)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        yield executor
    finally:
        executor.shutdown()
        spinner.join(timeout=10)
        if deactivate:
            node.trigger_deactivate()
        for n in (node, *peers):
            n.destroy_node()


class RecordingLogger:
    """Stands in for a node's logger and keeps its error lines (a configure failure is one of them)."""

    def __init__(self):
        self.errors: list[str] = []

    def error(self, text):
        self.errors.append(text)

    def info(self, text):
        pass

    warning = info
