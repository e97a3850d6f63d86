"""Frame counters and timing of the node, and their /diagnostics status.

``NodeStats`` is plain Python (thread-safe, no rclpy) so it is easy to test; the node turns
it into a ``diagnostic_msgs/DiagnosticStatus`` once per second.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, deque

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

__all__ = ["NodeStats", "diagnostic_status", "process_memory_mb"]


def process_memory_mb() -> float:
    """Resident memory of this process [MiB] (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
    except OSError:
        return 0.0
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class NodeStats:
    """Counts what happened to each input frame.

    Every received frame ends in exactly one of: processed, rejected (bad input, by cause),
    tf_failed (no transform in time) or dropped (replaced by a newer frame before inference
    took it), so ``received = processed + rejected + tf_failed + dropped + pending``.
    """

    def __init__(self, window: int = 50):
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.tf_failed = 0
        self.lost = 0  # reported lost by the middleware before they reached the node (also in dropped)
        self.rejected: Counter[str] = Counter()
        self._arrivals: deque[float] = deque(maxlen=window)
        self._processing_ms: deque[float] = deque(maxlen=window)
        self.last_processing_ms = 0.0
        self.last_latency_ms = 0.0

    def on_received(self, replaced_pending: bool) -> None:
        with self._lock:
            self.received += 1
            self.dropped += int(replaced_pending)
            self._arrivals.append(time.monotonic())

    def on_lost(self, count: int) -> None:
        """Frames the middleware reports lost (best effort): dropped without ever being received."""
        with self._lock:
            self.lost += count
            self.dropped += count

    def on_rejected(self, cause: str) -> None:
        with self._lock:
            self.rejected[cause] += 1

    def on_tf_failed(self) -> None:
        with self._lock:
            self.tf_failed += 1

    def on_processed(self, processing_ms: float, latency_ms: float) -> None:
        with self._lock:
            self.processed += 1
            self.last_processing_ms = processing_ms
            self.last_latency_ms = latency_ms
            self._processing_ms.append(processing_ms)

    def input_rate_hz(self) -> float:
        with self._lock:
            if len(self._arrivals) < 2:
                return 0.0
            span = time.monotonic() - self._arrivals[0]
            return (len(self._arrivals) - 1) / span if span > 0 else 0.0

    def mean_processing_ms(self) -> float:
        with self._lock:
            return sum(self._processing_ms) / len(self._processing_ms) if self._processing_ms else 0.0

    @property
    def total_rejected(self) -> int:
        with self._lock:
            return sum(self.rejected.values())


def diagnostic_status(
    name: str,
    hardware_id: str,
    stats: NodeStats,
    budget_ms: float,
    device: str,
    device_memory_mb: float | None,
    backend: str = "",
) -> DiagnosticStatus:
    """OK / WARN (over budget, drops or rejections) / ERROR (no frame processed yet after input)."""
    mean_ms = stats.mean_processing_ms()
    level, message = DiagnosticStatus.OK, "ok"
    if stats.received and not stats.processed:
        level, message = DiagnosticStatus.ERROR, "frames received but none processed"
    elif mean_ms > budget_ms:
        level, message = DiagnosticStatus.WARN, f"processing {mean_ms:.1f} ms over budget {budget_ms:.1f} ms"
    elif stats.tf_failed or stats.total_rejected:
        level, message = DiagnosticStatus.WARN, "some frames rejected or without TF"
    values = {
        "processing_time_ms": f"{mean_ms:.2f}",
        "last_processing_time_ms": f"{stats.last_processing_ms:.2f}",
        "pipeline_latency_ms": f"{stats.last_latency_ms:.2f}",
        "budget_ms": f"{budget_ms:.1f}",
        "input_rate_hz": f"{stats.input_rate_hz():.2f}",
        "received": str(stats.received),
        "processed": str(stats.processed),
        "dropped": str(stats.dropped),
        "lost_in_transport": str(stats.lost),
        "tf_failures": str(stats.tf_failed),
        "rejected": str(stats.total_rejected),
        "device": device,
        "backend": backend,
        "process_memory_mb": f"{process_memory_mb():.1f}",
    }
    for cause, count in sorted(stats.rejected.items()):
        values[f"rejected.{cause}"] = str(count)
    if device_memory_mb is not None:
        values["device_memory_mb"] = f"{device_memory_mb:.1f}"
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )
