"""The node's model: the predictor of ``checkpoint_path`` on the configured backend, or one error line.

Used by :class:`monoocc_ros.ros.node.MonoOccNode` at configure (and at activate after
``release_on_deactivate``); kept apart from the node so the loading rules (config name check,
backend options checked before the checkpoint is read, every failure one :class:`ModelLoadError`
naming the file) read on their own. It sees only the checked :class:`NodeParams`, not the node.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monoocc_ros.errors import one_line
from monoocc_ros.ros.params import NodeParams

__all__ = ["ModelLoadError", "load_predictor", "warm_up"]


class ModelLoadError(RuntimeError):
    """The checkpoint cannot be used; the text names the file and the reason."""


def load_predictor(params: NodeParams):
    """Build the Predictor from ``params.checkpoint_path``, checking its config name.

    Raises:
        ModelLoadError: one line naming the checkpoint, for any failure of loading or building
            the model (a missing file, a model_config value of the wrong type, bad weights ...).
    """
    from monoocc_ros.inference import BackendError, build_backend, check_backend_options
    from monoocc_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint

    try:  # an unsupported backend / precision / layout is refused before the checkpoint is read
        check_backend_options(params.backend, params.device, params.precision, params.channels_last)
    except (ValueError, BackendError) as err:
        raise ModelLoadError(f"parameters backend/precision/channels_last: {err}") from err
    try:
        ckpt = load_checkpoint(params.checkpoint_path)
        found = ckpt.get("config_name")
        if params.config_name and found != params.config_name:
            raise ModelLoadError(
                f"checkpoint_path '{params.checkpoint_path}' holds model config '{found}', "
                f"but parameter config_name is '{params.config_name}'"
            )
        model, _ = build_model_from_checkpoint(ckpt)
        return build_backend(
            params.backend,
            model,
            checkpoint_path=Path(params.checkpoint_path),
            config_name=found or "",
            device=params.device,
            precision=params.precision,
            confidence=params.publish_confidence,
            channels_last=params.channels_last,
            image_hw=params.warmup_image_size,
        )
    except ModelLoadError:
        raise
    except BackendError as err:  # already one line naming the backend (e.g. the `monoocc export` to run)
        raise ModelLoadError(str(err)) from err
    except Exception as err:  # noqa: BLE001 - whatever a bad file makes torch or the model raise
        text = one_line(err) or "(no message)"
        raise ModelLoadError(f"checkpoint_path '{params.checkpoint_path}': {type(err).__name__}: {text}") from err


def warm_up(predictor, params: NodeParams) -> bool:
    """The warm-up the parameters ask for, at ``warmup_image_size`` (none at [0, 0]).

    A generic frame first (kernels, allocators); then, with ``warmup_camera_k`` and the static
    extrinsic, a black frame of that camera: the model keeps the voxel projections of the last
    camera it saw, so the first real frame then skips them (about 200 ms at 185x613, one thread).

    Returns:
        Whether the camera warm-up ran.

    Raises:
        ModelLoadError: a warm-up failed; the predictor is released.
    """
    height, width = params.warmup_image_size
    if not (height and width):
        return False
    camera = params.warmup_camera_k is not None and params.static_T_cam_grid is not None
    try:
        predictor.warmup((height, width))
        if camera:
            black = np.zeros((height, width, 3), dtype=np.uint8)
            predictor.predict(black, params.warmup_camera_k, params.static_T_cam_grid)
    except (RuntimeError, ValueError) as err:
        predictor.release()
        raise ModelLoadError(f"warm-up at warmup_image_size {height}x{width} failed: {err}") from err
    return camera
