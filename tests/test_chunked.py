"""detval.model.chunked: CPU inference in chunks of images is bit-identical to the whole batch, and only used
where it can be (>= 2 images a chunk, >= 2 threads or >= 16 images, FP32 CPU eval)."""
import numpy as np
import pytest
import torch

from detval.data import ValDataset, collate, list_images, load_data_config, rect_batch_plan, scan_images
from detval.model import load_model
from detval.model.chunked import chunk_sizes


@pytest.fixture(scope="module")
def model(data_dir):
    return load_model(data_dir / "weights" / "yolov5n.pt").model


@pytest.fixture()
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def test_chunk_sizes():
    assert chunk_sizes(32, 640, 640, 2, 1_000_000) == [2] * 16
    assert chunk_sizes(32, 480, 640, 2, 1_000_000) == [4, 4, 3, 3, 3, 3, 3, 3, 3, 3]  # 3 a chunk, spread
    assert chunk_sizes(5, 640, 640, 2, 1_000_000) == [3, 2]  # never a chunk of 1 (another conv kernel)
    assert chunk_sizes(3, 640, 640, 2, 1_000_000) is None  # one chunk: the whole batch
    assert chunk_sizes(32, 160, 160, 2, 1_000_000) is None  # small inputs: no faster in chunks
    assert chunk_sizes(32, 640, 640, 1, 1_000_000) == [2] * 16  # one thread: the batch runs on oneDNN, so chunks do
    assert chunk_sizes(8, 640, 640, 1, 1_000_000) is None  # ... but not below 16 images (1x1 convs: torch's kernel)
    assert chunk_sizes(32, 640, 640, 2, None) is None


def whole_and_chunked(model, x):
    with torch.inference_mode():
        pixels = model.chunk_pixels
        try:
            model.chunk_pixels = None
            whole = model(x)
            model.chunk_pixels = 2 * x.shape[2] * x.shape[3]  # chunks of 2 (and a 3), the smallest allowed
            assert model.chunk_plan(x) is not None
            chunked = model(x)
        finally:
            model.chunk_pixels = pixels
    return whole, chunked


@pytest.mark.parametrize("shape", [(7, 224, 160), (5, 96, 128), (4, 320, 256)])
def test_random_inputs_bit_identical(model, two_threads, shape):
    x = torch.rand(shape[0], 3, *shape[1:], generator=torch.Generator().manual_seed(0))
    whole, chunked = whole_and_chunked(model, x)
    assert torch.equal(whole, chunked)


@pytest.mark.parametrize("threads", [1, 2])
def test_real_coco128_batch_bit_identical(model, two_threads, data_dir, threads):
    """On one thread too: a 16-image batch runs on oneDNN, and the chunks are made to (layers.onednn_convolutions);
    without that, its 1x1 convolutions would go to torch's own kernel below 16 images."""
    torch.set_num_threads(threads)
    data = load_data_config(data_dir / "coco128" / "coco128.yaml")
    records = scan_images(list_images(data.val), data.nc).records
    plan = rect_batch_plan(np.array([r.shape_hw for r in records]), 16, 320, 32)
    ds = ValDataset([records[i] for i in plan.order], plan, 320)
    batch = collate([ds[i] for i in plan.batch(3)])
    x = batch.images.float() / 255
    whole, chunked = whole_and_chunked(model, x)
    assert torch.equal(whole, chunked)


def test_training_half_and_small_single_thread_batches_run_whole(model, two_threads):
    x = torch.rand(4, 3, 640, 640)
    assert model.chunk_plan(x) == [2, 2]
    assert model.chunk_plan(x.half()) is None
    torch.set_num_threads(1)
    assert model.chunk_plan(x) is None
    assert model.chunk_plan(torch.rand(16, 3, 640, 640)) == [2] * 8


def test_uint8_input_is_divided_as_val_py_does(model, two_threads):
    x8 = torch.randint(0, 256, (6, 3, 640, 480), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    xf = x8.float()
    xf /= 255  # the engine's arithmetic
    with torch.inference_mode():
        assert model.chunk_plan(x8) == [3, 3]
        chunked = model(x8)
        pixels, model.chunk_pixels = model.chunk_pixels, None
        try:
            whole, whole8 = model(xf), model(x8)
        finally:
            model.chunk_pixels = pixels
    assert chunked.dtype == torch.float32
    assert torch.equal(chunked, whole) and torch.equal(whole8, whole)



def test_channels_last_is_close_not_exact(data_dir, two_threads):
    fast = load_model(data_dir / "weights" / "yolov5n.pt").model.use_channels_last()
    exact = load_model(data_dir / "weights" / "yolov5n.pt").model
    x = torch.rand(6, 3, 320, 256, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        a, b = exact(x), fast(x)
    assert a.shape == b.shape
    assert torch.allclose(a, b, rtol=0, atol=1e-2)  # boxes in pixels, scores in 0..1


def test_a_chunking_that_would_change_the_numbers_is_switched_off(data_dir, two_threads, monkeypatch):
    import detval.model.chunked as chunked
    from detval.model.split_sigmoid import SigmoidSplit

    fresh = load_model(data_dir / "weights" / "yolov5n.pt").model
    x = torch.rand(4, 3, 640, 640)
    # a wrong idea of torch's sigmoid split (another SIMD width) makes chunks differ from the whole batch
    monkeypatch.setattr(chunked, "exact_sigmoid_split", lambda: SigmoidSplit(2, 8))
    assert fresh.chunk_plan(x) is None
    monkeypatch.undo()
    assert fresh.chunk_plan(x) is None  # the verdict is kept for this thread count
    assert load_model(data_dir / "weights" / "yolov5n.pt").model.chunk_plan(x) == [2, 2]
