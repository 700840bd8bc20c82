"""A command imports only what it uses: `detval --help` and `detval compare` load no torch, torchvision or
matplotlib, `detval cocoeval` no torch. Each check runs in a fresh interpreter and reads its sys.modules."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from detval.results import ValResult, write_results_json

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "matplotlib")


def _loaded_after(code: str, *argv: str) -> set[str]:
    """The top-level packages among HEAVY + numpy that `code` (run with sys.argv[1:] = argv) leaves imported."""
    probe = (f"{code}\nimport sys, json\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', "
             "'matplotlib', 'numpy'})))")
    p = subprocess.run([sys.executable, "-c", probe, *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return set(json.loads(p.stdout.splitlines()[-1]))


def _main(*argv: str) -> str:
    """Code that runs `detval ARGV` in-process, exiting like the console script would only on failure."""
    return ("import sys\nfrom detval.cli import main\n"
            "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
            "assert rc == 0, rc\n")


def _results_json(path: Path, map50: float) -> Path:
    path.mkdir()
    result = ValResult(images=1, instances=1, p=0.5, r=0.5, map50=map50, map=map50 / 2, maps=[map50 / 2],
                       per_class=[], speed_ms={"inference": 1.0}, names=["a"])
    write_results_json(path / "results.json", result.to_json({"imgsz": 320}, "0", {"path": "w.pt", "sha256": ""}))
    return path


def test_help_imports_no_torch_torchvision_or_matplotlib():
    assert not _loaded_after(_main(), "--help") & set(HEAVY)
    for command in ("val", "eval", "bench", "cocoeval", "compare"):
        assert not _loaded_after(_main(), command, "--help") & set(HEAVY), command


def test_compare_imports_no_torch_torchvision_or_matplotlib(tmp_path):
    a, b = _results_json(tmp_path / "a", 0.5), _results_json(tmp_path / "b", 0.6)
    assert not _loaded_after(_main(), "compare", str(a), str(b)) & set(HEAVY)


def test_cocoeval_imports_no_torch(tmp_path):
    gt = {"images": [{"id": 1, "width": 100, "height": 80}], "categories": [{"id": 3, "name": "car"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 30, 20], "area": 600,
                           "iscrowd": 0}]}
    dets = [{"image_id": 1, "category_id": 3, "bbox": [11, 10, 30, 21], "score": 0.9}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    loaded = _loaded_after(_main(), "cocoeval", str(tmp_path / "gt.json"), str(tmp_path / "dt.json"))
    assert "numpy" in loaded and not loaded & set(HEAVY)  # numpy: the probe saw a real evaluation


@pytest.mark.parametrize("module", ["detval.results", "detval.report.compare", "detval.config", "detval.cli",
                                    "detval.commands.options", "detval.commands.compare", "detval.errors"])
def test_light_modules_import_no_torch(module):
    assert not _loaded_after(f"import {module}") & set(HEAVY)
