"""Predictor speed options validate their preconditions before any work."""

from __future__ import annotations

import pytest


def test_cuda_graphs_needs_compile_and_cuda(tiny_model):
    from monoocc_ros.predictor import Predictor

    with pytest.raises(ValueError, match="cuda_graphs"):
        Predictor(tiny_model, cuda_graphs=True)
    with pytest.raises(ValueError, match="cuda_graphs"):
        Predictor(tiny_model, compile=True, cuda_graphs=True)  # CPU
