"""detval: exact, fast, multi-device validation of YOLOv5 object detectors."""
__version__ = "0.1.0"
