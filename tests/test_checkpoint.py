"""detval.model.checkpoint: safe loading of YOLOv5 weights, and its error messages."""
import os
import pickle
from pathlib import Path

import pytest
import torch

from detval.model import CheckpointError, LoadedModel, check_nc, load_model
from detval.model.unpickler import RefusedGlobal
from detval.paths import shared_data_dir

# Published alongside the file (shared/data/SOURCES.md).
YOLOV5N_SHA256 = "4f180cf23ba0717ada0badd6c685026d73d48f184d00fc159c2641284b2ac0a3"


@pytest.fixture(scope="module")
def weights() -> Path:
    path = shared_data_dir() / "weights" / "yolov5n.pt"
    if not path.is_file():
        pytest.fail(f"real data not found: {path} (set DETVAL_DATA)")
    return path


@pytest.fixture(scope="module")
def official(weights) -> LoadedModel:
    return load_model(weights)


@pytest.fixture(scope="module")
def unfused_state(weights) -> dict:
    return load_model(weights, fuse=False).model.state_dict()


def _same_outputs(a: LoadedModel, b: LoadedModel) -> bool:
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.model(x), b.model(x))


def test_official_checkpoint_loads(official, weights):
    assert official.nc == 80 and len(official.names) == 80
    assert official.names[0] == "person" and official.names[-1] == "toothbrush"
    assert official.stride.tolist() == [8.0, 16.0, 32.0]
    assert official.sha256 == YOLOV5N_SHA256
    assert official.path == weights
    assert official.fused and official.model.is_fused and not official.model.training
    assert all(p.dtype == torch.float32 for p in official.model.parameters())
    assert sum(p.numel() for p in official.model.parameters()) == 1_867_405  # val.py's fused summary
    # The v7.0 anchors (pixels) stored in stride units.
    anchors_px = official.model.detect.anchors * official.stride.view(-1, 1, 1)
    assert anchors_px.flatten().tolist() == [10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119,
                                             116, 90, 156, 198, 373, 326]


def test_pickled_os_system_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"model": Exploit(), "ema": None}, tmp_path / "evil.pt")
    with pytest.raises(RefusedGlobal, match=r"(os|posix)\.system") as err:
        load_model(tmp_path / "evil.pt")
    assert str(tmp_path / "evil.pt") in str(err.value)
    assert not marker.exists()

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(CheckpointError, match=r"(os|posix)\.system"):
        load_model(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_pickled_eval_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return eval, ("1 + 1",)

    torch.save({"model": Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"builtins\.eval"):
        load_model(tmp_path / "evil.pt")


def test_unknown_yolov5_layer_is_an_architecture_error(tmp_path):
    # Protocol 2: GLOBAL models.common.GhostConv, EMPTY_TUPLE, NEWOBJ, STOP.
    (tmp_path / "ghost.pt").write_bytes(b"\x80\x02cmodels.common\nGhostConv\n)\x81.")
    with pytest.raises(CheckpointError, match=r"models\.common\.GhostConv.*unknown architecture"):
        load_model(tmp_path / "ghost.pt")


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("just some text\n")
    with pytest.raises(CheckpointError, match="notes.pt.*not a PyTorch checkpoint"):
        load_model(text)
    jpeg = shared_data_dir() / "coco128" / "images" / "train2017" / "000000000009.jpg"
    with pytest.raises(CheckpointError, match="000000000009.jpg.*JPEG"):
        load_model(jpeg)
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")


def test_truncated_files(tmp_path, weights, unfused_state):
    data = weights.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt.*truncated"):
        load_model(cut)
    legacy = tmp_path / "legacy.pt"
    torch.save(unfused_state, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="legacy.pt.*truncated"):
        load_model(legacy, cfg="yolov5n")


def test_state_dict_with_cfg_round_trips(tmp_path, official, unfused_state):
    plain = tmp_path / "plain.pt"
    torch.save(unfused_state, plain)
    with pytest.raises(CheckpointError, match="plain.pt.*no model yaml.*; pass --cfg "):
        load_model(plain)
    loaded = load_model(plain, cfg="yolov5n")
    assert loaded.names == [str(i) for i in range(80)]
    assert loaded.stride.tolist() == [8.0, 16.0, 32.0]
    assert _same_outputs(loaded, official)

    # A YOLOv5-style dict whose 'model' is a state_dict; a yaml path instead of a bundled name.
    cfg = Path(__file__).resolve().parents[1] / "detval" / "model" / "configs" / "yolov5n.yaml"
    in_dict = tmp_path / "dict.pt"
    torch.save({"model": unfused_state, "ema": None, "names": dict(enumerate(official.names))}, in_dict)
    loaded = load_model(in_dict, cfg=cfg)
    assert loaded.names == official.names
    assert _same_outputs(loaded, official)

    # A state_dict saved after fusion loads too.
    fused = tmp_path / "fused.pt"
    torch.save(official.model.state_dict(), fused)
    assert _same_outputs(load_model(fused, cfg="yolov5n"), official)


def test_ema_is_preferred_over_model(tmp_path, unfused_state):
    zeroed = {k: torch.zeros_like(v) if k.startswith("model.24.m.") else v for k, v in unfused_state.items()}
    path = tmp_path / "both.pt"
    torch.save({"model": unfused_state, "ema": zeroed}, path)
    head = load_model(path, cfg="yolov5n").model.detect.m[0]
    assert torch.count_nonzero(head.weight) == 0
    torch.save({"model": zeroed, "ema": None}, path)
    assert torch.count_nonzero(load_model(path, cfg="yolov5n").model.detect.m[0].weight) == 0


def test_mismatched_weights(tmp_path, unfused_state):
    state = dict(unfused_state)
    state.pop("model.0.conv.weight")
    state["model.99.weight"] = torch.zeros(1)
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"odd.pt.*missing keys: model\.0\.conv\.weight.*unexpected keys: model\.99"):
        load_model(path, cfg="yolov5n")
    torch.save(unfused_state, path)
    with pytest.raises(CheckpointError, match=r"odd.pt.*shape"):
        load_model(path, cfg="yolov5s")


def test_check_nc(official):
    check_nc(official, 80)
    with pytest.raises(CheckpointError, match="yolov5n.pt.*80 classes.*3"):
        check_nc(official, 3)
