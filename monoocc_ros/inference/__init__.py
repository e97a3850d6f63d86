"""Inference backends behind one interface (predict, warm-up, release, backend name); see :mod:`.backends`."""

from monoocc_ros.inference.backends import (
    BACKENDS,
    Backend,
    BackendError,
    artefact_path,
    backend_artefact,
    build_backend,
    check_backend_options,
    export_backend,
)

__all__ = ["BACKENDS", "Backend", "BackendError", "artefact_path", "backend_artefact", "build_backend",
           "check_backend_options", "export_backend"]
