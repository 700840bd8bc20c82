"""detval.model.split_sigmoid: where torch's CPU sigmoid runs scalar code, and slices that reproduce the whole call."""
import pytest
import torch

from detval.model.split_sigmoid import (GRAIN, OPS, REFERENCE_THREADS, SigmoidSplit, calibrate, op_of_slice,
                                        scalar_runs, torch_threads)


def test_scalar_runs_follow_the_thread_ranges():
    s2 = SigmoidSplit(threads=2, unit=32)
    assert scalar_runs(0, s2) == []
    assert scalar_runs(100, s2) == [(96, 100)]  # below the grain: one serial range
    assert scalar_runs(GRAIN, s2) == []  # serial too, and a multiple of the unit
    # 2 * 49213 - 1 elements: ranges [0, 49213) and [49213, 98425), tails of 29 and 28
    assert scalar_runs(98425, s2) == [(49184, 49213), (98397, 98425)]
    assert scalar_runs(98425, SigmoidSplit(threads=1, unit=32)) == [(98400, 98425)]
    # threads are capped at ceil(numel / grain): 3 threads, 2 grains of work, 2 ranges of 32768
    assert scalar_runs(2 * GRAIN, SigmoidSplit(threads=3, unit=32)) == []
    # 10 more elements: 3 ranges (21849, 21849, 21848 elements), tails of 25, 25, 24
    assert scalar_runs(2 * GRAIN + 10, SigmoidSplit(threads=3, unit=32)) == [(21824, 21849), (43673, 43698),
                                                                             (65522, 65546)]


@pytest.mark.parametrize("op_name", sorted(OPS))
@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_slices_at_any_thread_count_reproduce_the_reference_call(threads, op_name):
    """The head's sigmoid and every SiLU: chunks computed at 1-4 threads give the bits of torch's whole call at the
    reference's 2 threads."""
    op = OPS[op_name]
    split = calibrate(threads)
    assert split is not None, "no split reproduces torch on this CPU: detval's CPU digits then depend on threads"
    assert split.here.threads == threads and split.ref.threads == REFERENCE_THREADS
    gen = torch.Generator().manual_seed(1)
    # a head level of 7 images (3 anchors, 12 x 20 cells, 85 outputs) cut into uneven chunks of images
    x = torch.randn(7, 3, 12, 20, 85, generator=gen) * 8
    with torch_threads(REFERENCE_THREADS):
        whole = op(x)
    per_image = x[0].numel()
    with torch_threads(threads):
        b0, parts = 0, []
        for n in (2, 3, 2):
            parts.append(op_of_slice(op, x[b0:b0 + n], b0 * per_image, x.numel(), split))
            b0 += n
        assert torch.equal(torch.cat(parts), whole)
        assert torch.equal(op_of_slice(op, x, 0, x.numel(), split), whole)
        # the plain per-chunk call differs somewhere: the emulation is doing real work
        assert not torch.equal(torch.cat([op(x[:2]), op(x[2:5]), op(x[5:])]), whole)
