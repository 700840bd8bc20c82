"""YOLOv5 v7.0 P5 detectors (built from their yaml) and safe loading of their checkpoints."""
from .checkpoint import CheckpointError, LoadedModel, check_nc, load_model
from .yolo import DetectionModel

__all__ = ["load_model", "LoadedModel", "CheckpointError", "DetectionModel", "check_nc"]
