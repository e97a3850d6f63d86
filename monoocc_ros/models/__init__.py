"""MonoOcc student network, its configurations, weights conversion and checkpoints."""

from monoocc_ros.models.config import MODEL_CONFIGS, ModelConfig, get_model_config, model_config_from_dict
from monoocc_ros.models.monoocc import MonoOccStudent

__all__ = ["MODEL_CONFIGS", "ModelConfig", "MonoOccStudent", "get_model_config", "model_config_from_dict"]
