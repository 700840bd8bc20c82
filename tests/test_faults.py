"""Fault cases end to end on tiny copies of coco128 (tests/tiny_data.py) at --imgsz 320: a bad image, bad labels, a
read-only or full output, a broken cache. Each says what went wrong in one line naming the file, finds what it can
before inference, and keeps what was computed. (A failing or interrupted rank: tests/test_cli_distributed.py.)"""
from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tiny_data import first_image, label_of, tiny_coco128
from val_workers import FAULT_ENV
from detval.api import evaluate_raw, validate
from detval.cli import main as cli_main
from detval.config import ValConfig
from detval.errors import DetvalError
from detval.report.run_folder import RunIncomplete

IMGSZ = 320
ROOT = os.geteuid() == 0


def _mount(request, *args: str) -> None:
    """mount args (the last is the mount point), unmounted when the test ends."""
    subprocess.run(["mount", *args], check=True)
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", args[-1]], check=True))


@pytest.fixture
def read_only(request, tmp_path):
    """Make a folder read-only and return it: a read-only bind mount as root (chmod does not bind root), else
    chmod 555."""
    def make(folder):
        folder.mkdir(parents=True, exist_ok=True)
        if ROOT:
            _mount(request, "--bind", "-o", "ro", str(folder), str(folder))
        else:
            folder.chmod(0o555)
            request.addfinalizer(lambda: folder.chmod(0o755))
        return folder
    return make


def _val_argv(data_dir, yaml, project, *extra) -> list[str]:
    return ["val", "--weights", str(data_dir / "weights" / "yolov5n.pt"), "--data", str(yaml), "--imgsz", str(IMGSZ),
            "--batch-size", "2", "--device", "cpu", "--workers", "0", "--no-plots", "--project", str(project),
            "--name", "exp", "--exist-ok", *extra]


def _cfg(data_dir, yaml, tmp_path, **kw) -> ValConfig:
    base = dict(weights=str(data_dir / "weights" / "yolov5n.pt"), data=str(yaml), imgsz=IMGSZ, batch_size=2,
                device="cpu", workers=0, plots=False, project=str(tmp_path / "runs"), name="exp", exist_ok=True)
    base.update(kw)
    return ValConfig(**base)


# --- images and labels -------------------------------------------------------------------------------------------

def test_a_wide_thin_image_is_excluded_by_name_and_the_run_goes_on(data_dir, tmp_path, capsys):
    yaml = tiny_coco128(data_dir, tmp_path / "d", n=3)
    wide = yaml.parent / "images" / "train2017" / "wide.jpg"
    cv2.imwrite(str(wide), np.full((10, 4000, 3), 127, np.uint8))  # 4000 x 10: 320 x 0 after load_image
    r = validate(_cfg(data_dir, yaml, tmp_path, workers=1))
    err = capsys.readouterr().err
    assert r.images == 3
    assert [e.file for e in r.excluded] == [str(wide)]
    assert f"WARNING: excluded {wide}: {wide}: image 4000x10 would be resized to 320x0 at --imgsz 320" in err


def test_duplicate_rows_and_no_labels_at_all_are_warned_as_val_py_warns(data_dir, tmp_path, capsys):
    yaml = tiny_coco128(data_dir, tmp_path / "d", n=2)
    image = first_image(yaml)
    label = label_of(image)
    label.write_text(label.read_text() + label.read_text().splitlines()[0] + "\n")
    validate(_cfg(data_dir, yaml, tmp_path))
    assert f"val: WARNING ⚠️ {image}: 1 duplicate labels removed" in capsys.readouterr().err

    bare = tiny_coco128(data_dir, tmp_path / "bare", n=2, labels=False)
    r = validate(_cfg(data_dir, bare, tmp_path))
    err = capsys.readouterr().err
    assert r.instances == 0
    assert f"val: WARNING ⚠️ No labels found in {bare.parent / 'labels' / 'train2017'}. See https://" in err
    assert "WARNING ⚠️ no labels found in val set, can not compute metrics without labels" in err


# --- settings val.py adjusts -------------------------------------------------------------------------------------

def test_imgsz_off_the_stride_and_half_on_cpu_are_warned_and_recorded_as_run(data_dir, tmp_path, capsys):
    yaml = tiny_coco128(data_dir, tmp_path / "d", n=2)
    r = validate(_cfg(data_dir, yaml, tmp_path, imgsz=321, half=True))
    err = capsys.readouterr().err
    assert "WARNING ⚠️ --img-size 321 must be multiple of max stride 32, updating to 352" in err
    assert "--half: half precision is only supported on CUDA, running FP32 on cpu" in err
    settings = json.loads((r.run_dir / "results.json").read_text())["settings"]
    assert (settings["imgsz"], settings["half"]) == (352, False)
    same = validate(_cfg(data_dir, yaml, tmp_path, imgsz=352, name="fp32"))
    assert (r.p, r.r, r.map50, r.map) == (same.p, same.r, same.map50, same.map)  # FP32: the same floats


# --- outputs: refused before inference, kept after it ------------------------------------------------------------

def test_read_only_project_and_save_raw_are_refused_before_inference_in_one_line(data_dir, tmp_path, read_only,
                                                                                   capsys):
    yaml = tiny_coco128(data_dir, tmp_path / "d", n=2)
    ro = read_only(tmp_path / "ro")
    for argv, flag in ((_val_argv(data_dir, yaml, ro / "runs"), "--project"),
                       (_val_argv(data_dir, yaml, tmp_path / "runs", "--save-raw", str(ro / "raw")), "--save-raw")):
        assert cli_main(argv) == 2
        out, err = capsys.readouterr()
        assert out == ""  # nothing ran: not even the model was loaded, nor the data scanned
        why = "Read-only file system" if ROOT else "Permission denied"
        assert err.splitlines() == [f"detval: error: {flag} {argv[argv.index(flag) + 1]}: cannot write into {ro} "
                                    f"({why}); pass a writable {flag}"]


def test_a_full_disk_leaves_no_partial_file_and_says_what_is_kept(data_dir, tmp_path, full_disk):
    yaml = tiny_coco128(data_dir, tmp_path / "d", n=2)
    full = full_disk
    filler = full / "filler"
    raw = tmp_path / "raw"
    with pytest.raises(RunIncomplete) as e:
        validate(_cfg(data_dir, yaml, tmp_path, project=str(full), save_raw=str(raw)))
    run_dir = full / "exp"
    message = str(e.value)
    assert f"not written: {run_dir / 'results.json'} and per_class.csv (No space left on device" in message
    assert f"the metrics are not saved; {raw} holds every batch: detval eval --raw {raw}" in message
    assert sorted(p.name for p in run_dir.iterdir()) == []  # no partial results.json nor .tmp file
    assert e.value.result.images == 2  # the Python API still gets what was computed
    filler.unlink()  # space again: the cache gives the same numbers without the model
    again = evaluate_raw(_cfg(data_dir, yaml, tmp_path, weights="", save_raw=str(raw), project=str(full)))
    assert (again.p, again.r, again.map50, again.map) == (e.value.result.p, e.value.result.r,
                                                          e.value.result.map50, e.value.result.map)


@pytest.fixture
def full_disk(request, tmp_path):
    """A small tmpfs with every block taken (root only: mounting needs it)."""
    if not ROOT:
        pytest.skip("a full disk is a small tmpfs, which only root can mount")
    full = tmp_path / "full"
    full.mkdir()
    _mount(request, "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(full))
    with pytest.raises(OSError):
        with open(full / "filler", "wb") as f:
            while True:
                f.write(b"x" * 4096)
                f.flush()
    return full


def test_a_full_disk_image_cache_costs_the_cache_not_the_run(data_dir, tmp_path, full_disk, capsys):
    yaml = tiny_coco128(data_dir, tmp_path / "d", n=2)
    r = validate(_cfg(data_dir, yaml, tmp_path, cache="disk", cache_dir=str(full_disk / "images")))
    assert r.images == 2
    assert capsys.readouterr().err.count(f"WARNING: --cache disk: cannot write into {full_disk / 'images'} "
                                         "(No space left on device); images not cached") == 1


def test_an_output_that_fails_after_inference_leaves_results_json_and_is_named(data_dir, tmp_path, read_only):
    yaml = tiny_coco128(data_dir, tmp_path / "d", n=2)
    run_dir = tmp_path / "runs" / "exp"
    labels = read_only(run_dir / "labels")
    with pytest.raises(RunIncomplete, match=f"not written: {labels} \\(--save-txt\\) .*results.json holds the metrics"):
        validate(_cfg(data_dir, yaml, tmp_path, save_txt=True))
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["images"] == 2 and (run_dir / "per_class.csv").is_file()


# --- the raw-output cache ----------------------------------------------------------------------------------------

def test_a_cut_manifest_is_named_with_what_to_do(data_dir, tmp_path):
    yaml = tiny_coco128(data_dir, tmp_path / "d", n=2)
    raw = tmp_path / "raw"
    validate(_cfg(data_dir, yaml, tmp_path, save_raw=str(raw), quiet=True))
    manifest = raw / "manifest.json"
    manifest.write_text(manifest.read_text()[:60])
    for cfg in (_cfg(data_dir, yaml, tmp_path, save_raw=str(raw)), _cfg(data_dir, yaml, tmp_path, weights="",
                                                                          save_raw=str(raw))):
        with pytest.raises(DetvalError, match=f"{manifest}: unreadable raw-output cache manifest, truncated\\? "
                                              f".*delete {raw} .*run detval val --save-raw again"):
            (validate if cfg.weights else evaluate_raw)(cfg)


def test_a_cut_batch_file_is_found_and_recomputed(data_dir, tmp_path, capsys):
    yaml = tiny_coco128(data_dir, tmp_path / "d", n=4)
    raw = tmp_path / "raw"
    first = validate(_cfg(data_dir, yaml, tmp_path, save_raw=str(raw), quiet=True))
    batch = raw / "batch_000001.pt"
    whole = batch.read_bytes()
    batch.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DetvalError, match="incomplete cache \\(1 of 2 batches\\)"):
        evaluate_raw(_cfg(data_dir, yaml, tmp_path, weights="", save_raw=str(raw)))
    assert f"WARNING: {batch}: unreadable raw-output batch (BadZipFile" in capsys.readouterr().err
    again = validate(_cfg(data_dir, yaml, tmp_path, save_raw=str(raw), name="again"))
    err = capsys.readouterr()
    assert f"{batch}: unreadable raw-output batch" in err.err and "; recomputed" in err.err
    assert "1 of 2 batches cached, running 1" in err.out
    assert (again.p, again.r, again.map50, again.map, again.maps) == (first.p, first.r, first.map50, first.map,
                                                                      first.maps)
    assert batch.read_bytes() == whole


def test_a_cache_of_two_processes_resumed_by_one_gives_the_same_floats(data_dir, tmp_path):
    yaml = tiny_coco128(data_dir, tmp_path / "d", n=4)
    raw = tmp_path / "raw"
    two = validate(_cfg(data_dir, yaml, tmp_path, save_raw=str(raw), nproc=2, quiet=True, name="two"))
    (raw / "batch_000000.pt").unlink()  # as a killed run leaves it: one batch still to run
    resumed = validate(_cfg(data_dir, yaml, tmp_path, save_raw=str(raw), nproc=1, threads=1, quiet=True,
                            name="resumed"))
    fresh = validate(_cfg(data_dir, yaml, tmp_path, quiet=True, name="fresh"))
    floats = [(r.p, r.r, r.map50, r.map, r.maps) for r in (two, resumed, fresh)]
    assert floats[0] == floats[1] == floats[2]


# --- what the image decoders say ---------------------------------------------------------------------------------

def _with_corrupt_exif(jpeg: bytes) -> bytes:
    """jpeg with an EXIF block whose directory claims 2 entries and holds 1: PIL warns 'Corrupt EXIF data'."""
    tiff = b"II*\x00" + struct.pack("<IH", 8, 2) + struct.pack("<HHI4s", 0x0112, 3, 1, b"\x01\x00\x00\x00") + b"\x00\x00"
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def test_decoder_warnings_name_the_file_once(data_dir, tmp_path, capfd):
    yaml = tiny_coco128(data_dir, tmp_path / "d", n=2)
    folder = yaml.parent / "images" / "train2017"
    jpeg = first_image(yaml).read_bytes()
    (folder / "exif1.jpg").write_bytes(_with_corrupt_exif(jpeg))
    (folder / "exif2.jpg").write_bytes(_with_corrupt_exif(jpeg))
    (folder / "cut.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])
    flipped = bytearray(jpeg)  # whole, end marker in place: PIL's verify passes it, libjpeg complains on decode
    flipped[len(jpeg) // 2:len(jpeg) // 2 + 40] = b"\x00\xff" * 20
    (folder / "flipped.jpg").write_bytes(bytes(flipped))
    r = validate(_cfg(data_dir, yaml, tmp_path, workers=1, plots=True))  # the mosaics read the images again
    err = capfd.readouterr().err
    assert r.images == 5 and [e.file for e in r.excluded] == [str(folder / "cut.jpg")]
    assert f"WARNING ⚠️ {folder / 'flipped.jpg'}: Corrupt JPEG data: bad Huffman code" in err
    assert err.count("Corrupt JPEG data") == 1, err  # not again when the mosaics read it
    for name in ("exif1.jpg", "exif2.jpg"):
        assert err.count(f"val: WARNING ⚠️ {folder / name}: Corrupt EXIF data. Expecting to read 12 bytes") == 1
    lines = [line for line in err.splitlines() if "Premature end of JPEG file" in line]
    assert len(lines) == 1 and f"excluded {folder / 'cut.jpg'}: " in lines[0], err
    assert "UserWarning" not in err and err.count("Corrupt EXIF") == 2


# --- a rank killed ------------------------------------------------------------------------------------------------

def test_a_killed_rank_ends_the_run_in_one_line_and_its_peers_batches_are_kept(data_dir, tmp_path):
    """SIGKILL (the OOM killer) of rank 1 mid-run, from the command line: exit 2 naming the rank and the signal;
    the batches rank 0 stored stay in the raw cache, for a resume. (A rank that raises, and Ctrl-C:
    tests/test_cli_distributed.py.)"""
    yaml = tiny_coco128(data_dir, tmp_path / "d", n=8)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import val_workers\nval_workers.install_fault_from_env()\n")
    tests = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), str(tests), str(tests.parent)]),
               **{FAULT_ENV: "1:1:kill"})
    raw = tmp_path / "raw"
    argv = _val_argv(data_dir, yaml, tmp_path / "runs", "--nproc", "2", "--schedule", "static", "--save-raw", str(raw))
    p = subprocess.run([sys.executable, "-m", "detval", *argv], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-3000:]
    errors = re.findall(r"detval: error: .*", p.stderr)  # after the progress bar's last redraw
    assert len(errors) == 1 and "rank 1" in errors[0] and "SIGKILL" in errors[0], p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "runs" / "exp" / "results.json").exists()
    assert {"batch_000000.pt", "batch_000002.pt"} <= {f.name for f in raw.glob("batch_*.pt")}  # rank 1 ran batch 2
