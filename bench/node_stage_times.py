"""Run the MonoOcc node with a timer on each part of its per-frame path (for bench_node_replay.py).

The node is unchanged: its ``_process``, the predictor's ``predict`` and ``_publish`` are wrapped
here, in the benchmark, and each processed frame's times (monotonic seconds, one clock for every
process on the machine) are rewritten to ``OUT_JSON`` after the frame:

    {"frames": [{"arrived", "start", "predict_start", "predict_end", "publish_ms", "end",
                 "model_ms": {stage: ms}}, ...],
     "inputs": [[stamp_ns, arrived], ...],      # every image the callback received, processed or not
     "gc_pauses": [[start, ms, generation], ...]}  # Python's cyclic collector, any thread, >= 1 ms

``--executor multi`` runs the node on rclpy's ``MultiThreadedExecutor`` (the node before it moved
to a single-threaded one), for A/B runs of ``bench_node_replay.py --executor``.

    python bench/node_stage_times.py OUT_JSON [--executor multi] --ros-args -p checkpoint_path:=... (the node's arguments)
"""

from __future__ import annotations

import gc
import json
import sys
import threading
import time
from pathlib import Path


def install(out: Path, executor: str = "single"):
    """Wrap the node's per-frame methods; each frame appends one record and rewrites ``out``.

    Returns the function that rewrites ``out`` (called once more when the node ends, for the
    inputs that arrived after the last processed frame)."""
    import monoocc_ros.ros.node as node_module
    from monoocc_ros.ros.node_outputs import NodeOutputs

    if executor == "multi":
        from rclpy.executors import MultiThreadedExecutor

        node_module.SingleThreadedExecutor = MultiThreadedExecutor
    frames: list[dict] = []
    inputs: list[tuple[int, float]] = []
    gc_pauses: list[tuple[float, float, int]] = []
    current = threading.local()  # the inference thread's frame record
    gc_start = [0.0]

    def on_gc(phase, info):
        if phase == "start":
            gc_start[0] = time.monotonic()
        elif (ms := 1e3 * (time.monotonic() - gc_start[0])) >= 1.0:
            gc_pauses.append((gc_start[0], round(ms, 1), info["generation"]))

    gc.callbacks.append(on_gc)

    def write():
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"frames": frames, "inputs": inputs, "gc_pauses": gc_pauses}))
        tmp.replace(out)
    process, load, publish = (
        node_module.MonoOccNode._process,
        node_module.MonoOccNode._load_predictor,
        NodeOutputs._publish,
    )

    def timed_process(self, msg, arrived_s):
        current.frame = {"arrived": arrived_s, "start": time.monotonic()}
        process(self, msg, arrived_s)
        current.frame["end"] = time.monotonic()
        if "predict_end" in current.frame:  # rejected frames are not timed
            frames.append(current.frame)
            write()

    def timed_load(self):
        predictor = load(self)
        predict = predictor.predict

        def timed_predict(*args, **kwargs):
            frame = getattr(current, "frame", None)
            if frame is None:  # warm-up, before any frame
                return predict(*args, **kwargs)
            frame["predict_start"] = time.monotonic()
            prediction = predict(*args, **kwargs)
            frame["predict_end"] = time.monotonic()
            frame["model_ms"] = dict(prediction.timings_ms)
            return prediction

        predictor.predict = timed_predict
        return predictor

    def timed_publish(self, *args):
        start = time.monotonic()
        publish(self, *args)
        current.frame["publish_ms"] = (time.monotonic() - start) * 1e3

    on_image = node_module.MonoOccNode._on_image

    def recorded_on_image(self, msg):
        inputs.append((msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, time.monotonic()))
        on_image(self, msg)

    node_module.MonoOccNode._process = timed_process
    node_module.MonoOccNode._on_image = recorded_on_image
    node_module.MonoOccNode._load_predictor = timed_load
    NodeOutputs._publish = timed_publish
    return write


def main() -> int:
    out = Path(sys.argv.pop(1))
    executor = "single"
    if sys.argv[1:2] == ["--executor"]:
        executor = sys.argv[2]
        del sys.argv[1:3]
    write = install(out, executor)
    from monoocc_ros.ros.node import main as node_main

    try:
        return node_main()
    finally:
        write()


if __name__ == "__main__":
    sys.exit(main())
