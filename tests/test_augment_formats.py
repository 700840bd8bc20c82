"""--augment with the other weights val.py takes: ensembles augment every member (val.py's Ensemble passes augment
on); exported models run without it, as val.py's DetectMultiBackend ignores it, and detval says so."""
import json

import torch

from detval.model import load_model
from detval.model.load import open_weights
from reference_runs import run_case, subset_yaml


def test_an_ensemble_augments_every_member(data_dir):
    a, b = (str(data_dir / "weights" / w) for w in ("yolov5n.pt", "yolov5n-perturbed.pt"))
    ens = open_weights((a, b))
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        joined = torch.cat([load_model(a).model(x, augment=True), load_model(b).model(x, augment=True)], 1)
        assert torch.equal(ens.model(x, augment=True), joined)
        assert ens.model(x, augment=True).shape[1] != ens.model(x).shape[1]  # three passes, clipped


def test_augment_on_an_onnx_file_runs_without_it_and_says_so(data_dir, tmp_path, capsys):
    data = subset_yaml(data_dir, tmp_path, 2)
    plain = run_case(data_dir, tmp_path, "plain", ["yolov5n.onnx"], data=data)
    augmented = run_case(data_dir, tmp_path, "augment", ["yolov5n.onnx"], data=data, augment=True)
    assert "--augment runs PyTorch weights only; ONNX Runtime runs without it" in capsys.readouterr().err
    assert augmented.map == plain.map
    settings = json.loads((augmented.run_dir / "results.json").read_text())["settings"]
    assert settings["augment"] is False
