"""YOLOv5 v7.0 P5 detectors (built from their yaml) and safe loading of their checkpoints.

unpickler.py reads pickled module trees without running code; checkpoint.py reads a weights file into
CheckpointContents; build.py builds the DetectionModel from them (load_model, LoadedModel, check_nc).
"""
from .build import LoadedModel, check_nc, load_model
from .errors import CheckpointError
from .yolo import DetectionModel

__all__ = ["load_model", "LoadedModel", "CheckpointError", "DetectionModel", "check_nc"]
