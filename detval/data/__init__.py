"""Data path: files -> records (scan) -> batch plan -> letterboxed tensors."""
from detval.data.dataset import Batch, ValDataset, batch_indices, collate
from detval.data.dataset_yaml import DataConfig, DataError, label_path_for, list_images, load_data_config
from detval.data.letterbox import letterbox, load_image
from detval.data.plan import BatchPlan, rect_batch_plan, square_batch_plan
from detval.data.scan import ImageRecord, ScanResult, scan_images

__all__ = ["Batch", "BatchPlan", "DataConfig", "DataError", "ImageRecord", "ScanResult", "ValDataset",
           "batch_indices", "collate", "label_path_for", "letterbox", "list_images", "load_data_config",
           "load_image", "rect_batch_plan", "scan_images", "square_batch_plan"]
