"""MonoOcc student network (monoocc.py), its configurations (config.py), building blocks,
weights conversion (weights.py) and checkpoints (checkpoint.py)."""
