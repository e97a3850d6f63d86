"""State-dict keys without wrapper prefixes: one rule for every loader.

``DistributedDataParallel`` (and ``DataParallel``) save their module's weights under
``module.``; ``torch.compile`` saves them under ``_orig_mod.`` — at the front when the whole
model was compiled, or in the middle (``trunk._orig_mod.conv1.weight``) when only a submodule
was. Every loader (project checkpoints, torchvision ResNets, official MonoOcc and VoxFormer
weights) passes its dict through :func:`clean_state_dict` so that a checkpoint saved from any of
those wrappers loads into the plain model.

Example:
    >>> clean_state_dict({"module._orig_mod.head.weight": 1, "trunk._orig_mod.conv1.weight": 2})
    {'head.weight': 1, 'trunk.conv1.weight': 2}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

__all__ = ["clean_state_dict", "clean_key"]

V = TypeVar("V")

# ``_orig_mod`` is torch.compile's attribute and never a real layer name, so it is dropped
# wherever it appears. ``module`` is only a wrapper at the front (DDP wraps the whole model): a
# layer can legitimately be called ``module`` deeper in the tree, so inner ones are kept.
_COMPILE = "_orig_mod"
_WRAPPERS = ("module", _COMPILE)


def clean_key(key: str) -> str:
    """One key without DDP/DataParallel ``module.`` and ``torch.compile`` ``_orig_mod.`` prefixes.

    >>> clean_key("_orig_mod.module.head.weight"), clean_key("head.module.weight")
    ('head.weight', 'head.module.weight')
    """
    parts = key.split(".")
    while len(parts) > 1 and parts[0] in _WRAPPERS:
        parts.pop(0)
    return ".".join(p for i, p in enumerate(parts) if p != _COMPILE or i == len(parts) - 1)


def clean_state_dict(state: Mapping[str, V]) -> dict[str, V]:
    """``state`` with every key passed through :func:`clean_key`, in the same order.

    Raises:
        ValueError: two keys become the same key (e.g. ``module.x`` and ``x`` both present),
            which would silently drop a tensor.
    """
    out: dict[str, V] = {}
    for key, value in state.items():
        new = clean_key(key)
        if new in out:
            raise ValueError(f"state dict keys collide after removing wrapper prefixes: {key!r} -> {new!r}")
        out[new] = value
    return out
