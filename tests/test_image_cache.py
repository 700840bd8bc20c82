"""detval.cache.images: hits and misses, invalidation on file and setting changes, identical items with and
without the cache (RAM and disk), atomic memory-mapped disk entries."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from detval.cache.images import DiskImageCache, RamImageCache, image_key, open_image_cache
from detval.data import ValDataset, rect_batch_plan, scan_images

STEMS = ["000000000009", "000000000025", "000000000030", "000000000034", "000000000036"]


@pytest.fixture()
def images(data_dir, tmp_path):
    """Copies of a few real coco128 images (the tests change their files)."""
    src = data_dir / "coco128" / "images" / "train2017"
    dst = tmp_path / "images"
    dst.mkdir()
    for s in STEMS:
        shutil.copy2(src / f"{s}.jpg", dst / f"{s}.jpg")
    return sorted(dst.glob("*.jpg"))


def dataset(paths, img_size=320, batch_size=2, cache=None) -> ValDataset:
    scan = scan_images(paths, nc=80)
    plan = rect_batch_plan(np.array([r.shape_hw for r in scan.records]), batch_size, img_size, 32)
    return ValDataset([scan.records[i] for i in plan.order], plan, img_size, image_cache=cache)


def assert_same_item(a, b) -> None:
    """Two load_letterboxed results (or dataset items) are equal: arrays by value and dtype, everything else by
    value and python type, recursively (a float64 where a float was would change the label arithmetic)."""
    if isinstance(a, (np.ndarray, torch.Tensor)):
        x, y = np.asarray(a), np.asarray(b)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for u, v in zip(a, b):
            assert_same_item(u, v)
    else:
        assert a == b and type(a) is type(b), (a, b)


@pytest.mark.parametrize("kind", ["ram", "disk"])
def test_items_identical_with_and_without_cache_and_hits_on_second_pass(images, tmp_path, kind):
    cache = RamImageCache() if kind == "ram" else DiskImageCache(tmp_path / "cache")
    plain, cached = dataset(images), dataset(images, cache=cache)
    for _ in range(2):  # a miss (loads and stores), then a hit (from the dict / the files)
        for i in range(len(plain)):
            assert_same_item(cache.get(cached, i), plain.load_letterboxed(i))
            assert_same_item(cached[i], plain[i])  # image tensor, labels, path, shapes, index
    assert cache.misses == len(plain) and cache.hits == 3 * len(plain)


def test_disk_entries_persist_across_instances_memory_mapped_and_atomic(images, tmp_path):
    root = tmp_path / "cache"
    ds = dataset(images)
    first = DiskImageCache(root)
    for i in range(len(ds)):
        first.get(ds, i)
    files = sorted(p.name for p in root.rglob("*"))
    assert not any(n.startswith(".tmp-") for n in files)  # no leftover temporary file
    assert len([n for n in files if n.endswith(".npy")]) == len(ds) == len([n for n in files if n.endswith(".json")])
    second = DiskImageCache(root)  # e.g. the next run
    img = second.get(ds, 0)[0]
    assert second.hits == 1 and second.misses == 0
    assert isinstance(img, np.memmap) and not img.flags.writeable
    assert_same_item(second.get(ds, 0), ds.load_letterboxed(0))


def test_changed_file_is_a_miss_and_replaces_its_old_entry(images, tmp_path):
    root = tmp_path / "cache"
    cache, ds = DiskImageCache(root), dataset(images)
    i = 0
    path = ds.records[i].path
    cache.get(ds, i)
    old_npy, _ = cache.entry_paths(image_key(ds, i))
    assert old_npy.is_file()

    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: same bytes, newer mtime
    cache.get(ds, i)
    assert (cache.hits, cache.misses) == (0, 2)
    assert not old_npy.exists() and not old_npy.with_suffix(".json").exists()

    # other pixels, other size: a flipped copy of the image
    import cv2
    flipped = cv2.imread(str(path))[:, ::-1]
    cv2.imwrite(str(path), flipped, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert os.stat(path).st_size != st.st_size
    item = cache.get(ds, i)
    assert (cache.hits, cache.misses) == (0, 3)
    assert_same_item(item, ds.load_letterboxed(i))  # the new pixels, not the cached old ones
    assert len(list(cache.entry_paths(image_key(ds, i))[0].parent.glob("*.npy"))) == 1


def test_changed_settings_are_misses_and_entries_coexist(images, tmp_path):
    cache = DiskImageCache(tmp_path / "cache")
    at320, at256 = dataset(images, 320), dataset(images, 256)
    mixed = dataset(images, 320, batch_size=5)  # one batch, landscape and portrait: a square shape for all
    for ds in (at320, at256, at320):
        for i in range(len(ds)):
            cache.get(ds, i)
    assert cache.misses == 2 * len(at320) and cache.hits == len(at320)
    assert {mixed.plan.shape_of(i) for i in range(len(mixed))} == {(352, 352)}
    assert all(at320.plan.shape_of(i) != (352, 352) for i in range(len(at320)))
    for i in range(len(mixed)):
        assert_same_item(cache.get(mixed, i), mixed.load_letterboxed(i))
    assert cache.misses == 3 * len(at320) and cache.hits == len(at320)


def test_ram_cache_is_shared_in_the_process_and_disk_honours_the_folder(tmp_path):
    assert open_image_cache(None) is None
    assert open_image_cache("ram") is open_image_cache("ram")
    assert open_image_cache("disk", tmp_path).root == tmp_path
    with pytest.raises(ValueError):
        open_image_cache("gpu")


def test_disk_cache_folder_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DETVAL_CACHE_DIR", str(tmp_path / "env"))
    assert open_image_cache("disk").root == tmp_path / "env"
    monkeypatch.delenv("DETVAL_CACHE_DIR")
    assert open_image_cache("disk").root == Path("~/.cache/detval/images").expanduser()
