"""detval.model.chunked: CPU inference in chunks of images is bit-identical to the whole batch, and only used
where it can be (>= 2 images a chunk, >= 2 threads or >= 16 images, FP32 CPU eval)."""
import numpy as np
import pytest
import torch

from detval.data import ValDataset, collate, list_images, load_data_config, rect_batch_plan, scan_images
from detval.model import load_model
from detval.model.chunked import chunk_sizes
from detval.model.layers import BatchSlice, reference_kernels
from detval.model.split_sigmoid import REFERENCE_THREADS, calibrate, torch_threads


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
    assert chunk_sizes(32, 640, 640, 1_000_000) == [2] * 16
    assert chunk_sizes(32, 480, 640, 1_000_000) == [4, 4, 3, 3, 3, 3, 3, 3, 3, 3]  # 3 a chunk, spread
    assert chunk_sizes(5, 640, 640, 1_000_000) == [3, 2]
    assert chunk_sizes(3, 640, 640, 1_000_000) == [3]  # one chunk: the whole batch
    assert chunk_sizes(4, 1024, 1024, 1_000_000) == [1] * 4  # a chunk of one image runs oneDNN too
    assert chunk_sizes(32, 160, 160, 1_000_000) == [32]  # small inputs: no faster in chunks
    assert chunk_sizes(32, 640, 640, None) == [32]


def torch_reference(model, x):
    """What val.py's torch computes: its own kernel choice, the whole batch, at the reference's 2 threads."""
    with torch.inference_mode(), torch_threads(REFERENCE_THREADS):
        return model.detect(model.features(model.as_input(x)))


def forward_with_chunks(model, x, threads, images_per_chunk):
    """The model's forward at `threads` threads, in chunks of about images_per_chunk images."""
    with torch.inference_mode(), torch_threads(threads):
        pixels = model.chunk_pixels
        try:
            model.chunk_pixels = images_per_chunk * x.shape[2] * x.shape[3]
            assert model.chunk_plan(x) is not None
            return model(x)
        finally:
            model.chunk_pixels = pixels


@pytest.mark.parametrize("shape", [(7, 224, 160), (5, 96, 128), (4, 320, 256)])
def test_random_inputs_reproduce_the_reference_at_any_thread_count(model, shape):
    x = torch.rand(shape[0], 3, *shape[1:], generator=torch.Generator().manual_seed(0))
    reference = torch_reference(model, x)
    for threads in (1, 2, 4):
        for per_chunk in (1, 2, shape[0]):
            assert torch.equal(forward_with_chunks(model, x, threads, per_chunk), reference), (threads, per_chunk)


@pytest.mark.parametrize("batch_size, index", [(7, 3), (16, 2)])
def test_real_coco128_batch_reproduces_the_reference_at_any_thread_count(model, data_dir, batch_size, index):
    """On one thread torch itself sends a small batch's 1x1 convolutions to its own kernel (other digits), and at 4
    threads the SiLU ranges end mid-step: detval's forward gives the 2-thread whole batch's bits at 1, 2 and 4."""
    data = load_data_config(data_dir / "coco128" / "coco128.yaml")
    records = scan_images(list_images(data.val), data.nc).records
    plan = rect_batch_plan(np.array([r.shape_hw for r in records]), batch_size, 320, 32)
    ds = ValDataset([records[i] for i in plan.order], plan, 320)
    x = collate([ds[i] for i in plan.batch(index)]).images.float() / 255
    reference = torch_reference(model, x)
    if batch_size < 16:  # torch's own 1-thread forward of this batch differs (its 1x1 kernel)
        with torch.inference_mode(), torch_threads(1):
            assert not torch.equal(model.detect(model.features(x)), reference)
    for threads in (1, 2, 4):
        for per_chunk in (1, 3, batch_size):
            assert torch.equal(forward_with_chunks(model, x, threads, per_chunk), reference), (threads, per_chunk)


def test_a_single_image_runs_the_batch_kernels_at_any_thread_count(model):
    """A batch of one image (--batch-size 1, or a last partial batch): torch's own forward runs small convolutions on
    its own kernel, whose sums depend on the thread count; detval runs oneDNN, whose maps are the image's maps inside
    a batch, and the same bits at 1, 2 and 4 threads."""
    x = torch.rand(2, 3, 128, 192, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode(), torch_threads(REFERENCE_THREADS):
        in_batch = model.detect.raw_maps(model.features(x))
        with reference_kernels(BatchSlice(0, 1, calibrate(REFERENCE_THREADS))):
            alone = model.detect.raw_maps(model.features(x[:1]))
    assert all(torch.equal(a, b[:1]) for a, b in zip(alone, in_batch))
    outputs = [forward_with_chunks(model, x[:1], threads, 1) for threads in (1, 2, 4)]
    assert all(torch.equal(y, outputs[0]) for y in outputs[1:])


def test_training_and_half_run_torch_plainly(model):
    x = torch.rand(4, 3, 640, 640)
    with torch_threads(2):
        assert model.chunk_plan(x)[0] == [2, 2]
        assert model.chunk_plan(x.half()) is None
        model.detect.train()
        try:
            assert model.chunk_plan(x) is None
        finally:
            model.detect.eval()
    with torch_threads(1):
        assert model.chunk_plan(torch.rand(8, 3, 640, 640))[0] == [2] * 4  # one thread too


def test_uint8_input_is_divided_as_val_py_does(model, two_threads):
    x8 = torch.randint(0, 256, (6, 3, 640, 480), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    xf = x8.float()
    xf /= 255  # the engine's arithmetic
    with torch.inference_mode():
        assert model.chunk_plan(x8)[0] == [3, 3]
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


def test_a_forward_that_cannot_reproduce_the_reference_runs_torch_plainly(data_dir, two_threads, monkeypatch):
    import detval.model.chunked as chunked
    from detval.model.split_sigmoid import ExactSplit, SigmoidSplit

    fresh = load_model(data_dir / "weights" / "yolov5n.pt").model
    x = torch.rand(4, 3, 640, 640)
    # a wrong idea of torch's elementwise split (another SIMD width) makes the forward differ from the reference
    monkeypatch.setattr(chunked, "calibrate", lambda threads: ExactSplit(SigmoidSplit(threads, 8), SigmoidSplit(2, 8)))
    assert fresh.chunk_plan(x) is None
    monkeypatch.undo()
    assert fresh.chunk_plan(x) is None  # the verdict is kept for this thread count
    assert load_model(data_dir / "weights" / "yolov5n.pt").model.chunk_plan(x)[0] == [2, 2]
