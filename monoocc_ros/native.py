"""Small C libraries compiled on first use with the system compiler, cached per user, loaded with ctypes.

One place for what the fused inference kernels (:mod:`monoocc_ros.models.cpu_kernels`) and the map
kernel (:mod:`monoocc_ros.mapping.kernel`) share: where the shared objects live, the cache key (source,
compiler, flags and the CPU, since they are built with ``-march=native``), an atomic build that
concurrent processes can race, the ``MONOOCC_FUSED_KERNELS=0`` switch, and a one-line status saying
what runs instead when a library cannot be had. No torch import: the map runs without it.

Example:
    >>> lib = NativeLibrary("demo", "int twice(int x) { return 2 * x; }", ["-O2", "-fPIC", "-shared"],
    ...                     declare=lambda l: None, fallback="Python")
    >>> lib.load() is None or lib.load().twice(21) == 42  # None where no C compiler exists
    True
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["NativeLibrary", "cache_dir", "in_graph_capture", "tensors_key"]


def in_graph_capture() -> bool:
    """True inside a TorchScript trace, ``torch.compile`` or ``torch.export``: there an opaque ctypes
    call, or a tensor cached from an earlier call, would be frozen into the graph as a constant (or
    fail on a fake tensor's data pointer), so callers take their plain PyTorch path."""
    import torch

    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()


def tensors_key(tensors) -> tuple:
    """A key that changes when any of ``tensors`` is replaced (storage, dtype, device) or changed in place
    (its version counter): what a cache of tensors derived from weights (a folded convolution, a
    positional table) is valid for, through ``load_state_dict`` and in-place edits alike."""
    return tuple((t.data_ptr(), t._version, t.dtype, str(t.device)) for t in tensors)


def cache_dir() -> Path:
    """``$MONOOCC_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/monoocc_ros/kernels`` (``~/.cache`` by default)."""
    root = os.environ.get("MONOOCC_KERNEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "monoocc_ros", "kernels"
    )
    return Path(root)


def _cpu_signature() -> str:
    """The CPU's model name and flags lines: a library built with -march=native is keyed by them."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    model = next((line for line in lines if line.startswith("model name")), "")
    flags = next((line for line in lines if line.startswith("flags")), "")
    return f"{model}\n{flags}"


class NativeLibrary:
    """A C source built once per machine and loaded once per process.

    Args:
        name: file stem of the shared object and the name used in status lines.
        source: the C source.
        flags: compiler flags (they are part of the cache key).
        declare: sets ``argtypes``/``restype`` on the loaded library.
        fallback: what callers run when the library cannot be had (for the status line).
    """

    def __init__(self, name: str, source: str, flags: list[str], *, declare: Callable[[ctypes.CDLL], None], fallback: str):
        self.name, self.source, self.flags, self.declare, self.fallback = name, source, list(flags), declare, fallback
        # "lib" (the CDLL or None) once loading was tried, and "status"; tests may set "lib" to None
        self.state: dict[str, object] = {}
        self._lock = threading.Lock()

    def load(self) -> ctypes.CDLL | None:
        """The library, built and loaded on the first call; None when it cannot be built or
        ``MONOOCC_FUSED_KERNELS=0`` (then :meth:`status` says why)."""
        with self._lock:
            if "lib" not in self.state:
                if os.environ.get("MONOOCC_FUSED_KERNELS", "1") == "0":
                    self._give_up(f"disabled by MONOOCC_FUSED_KERNELS=0: {self.fallback} instead")
                else:
                    try:
                        self.state["lib"] = self._build()
                    except OSError as err:
                        self._give_up(f"{self.name} unavailable ({err}): {self.fallback} instead")
            return self.state["lib"]  # type: ignore[return-value]

    def status(self) -> str:
        """One line: the shared object in use, or what runs instead and why."""
        self.load()
        return str(self.state.get("status", ""))

    def _give_up(self, status: str) -> None:
        self.state["lib"], self.state["status"] = None, status

    def _build(self) -> ctypes.CDLL | None:
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            self._give_up(f"no C compiler found: {self.fallback} instead")
            return None
        key = hashlib.sha256(
            "\0".join([self.source, compiler, *self.flags, platform.machine(), _cpu_signature()]).encode()
        ).hexdigest()[:16]
        target = cache_dir() / f"monoocc_{self.name}_{key}.so"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                src = Path(tmp) / f"monoocc_{self.name}.c"
                src.write_text(self.source)
                out = Path(tmp) / target.name
                proc = subprocess.run([compiler, *self.flags, str(src), "-o", str(out), "-lm"], capture_output=True, text=True)
                if proc.returncode != 0:
                    self._give_up(f"compiling {self.name} failed ({proc.stderr.strip()[:200]}): {self.fallback} instead")
                    return None
                os.replace(out, target)  # atomic: concurrent builders each write their own copy
        lib = ctypes.CDLL(str(target))
        self.declare(lib)
        self.state["status"] = f"{self.name}: {target}"
        return lib

