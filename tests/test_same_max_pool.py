"""detval.model.layers.SameMaxPool2d: SPPF's pooling, separable, equal to nn.MaxPool2d bit for bit."""
import pytest
import torch

from detval.model.layers import SameMaxPool2d


@pytest.mark.parametrize("k", [3, 5, 9])
def test_same_max_pool_equals_max_pool2d(k):
    x = torch.randn(2, 8, 13, 21, generator=torch.Generator().manual_seed(k))
    x[0, 0, 0, :4] = -1e30  # border values below any padding other than -inf
    assert torch.equal(SameMaxPool2d(k)(x), torch.nn.MaxPool2d(k, 1, k // 2)(x))
