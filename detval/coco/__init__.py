"""COCO in one place: the JSON formats (format.py), the ground truth a run evaluates against (ground_truth.py),
val.py's predictions rows (predictions.py), the bbox evaluator (evaluate.py: evaluate per image, accumulate,
summarize, pycocotools' digits) and the reference libraries (reference.py). The run's COCO evaluator is
detval/evaluation/coco.py; COCO JSON as validation input is detval/data/coco_dataset.py."""
