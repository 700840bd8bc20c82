"""benchmarks/gpu_check.py without a GPU: its commands, its verdicts, its refusal to run on a CPU-only machine."""
import pytest

from benchmarks.gpu_check import checks, main, table


def _result(p=0.6, maps=(0.3, 0.4), seconds=5.0):
    return {"metrics": {"P": p, "R": 0.5, "mAP50": 0.56, "mAP50-95": 0.36}, "maps": list(maps),
            "speed_ms_per_image": {"preprocess": 0.5, "inference": 3.0, "nms": 1.0}, "process_seconds": seconds}


def test_dry_run_prints_one_command_per_check(capsys):
    assert main(["--dry-run", "--device", "1", "--imgsz", "320"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5
    assert all(" val " in f" {line} " and "--imgsz 320" in line and "--no-plots" in line for line in lines)
    assert [line.split("--device ")[1].split()[0] for line in lines] == ["1", "1", "1", "1,1", "cpu"]
    assert "--half" in lines[1] and "--dp" in lines[2]


def test_device_must_be_one_cuda_index():
    with pytest.raises(SystemExit):
        checks("0,1")
    with pytest.raises(SystemExit):
        checks("cpu")


def test_table_flags_runs_that_lose_fp32s_digits():
    plan = checks("0")
    results = {"fp32": _result(), "half": _result(p=0.6001), "dp": _result(), "2 ranks": _result(maps=(0.3, 0.41)),
               "cpu": _result(p=0.5999)}
    rows, ok = table(results, plan)
    assert not ok
    by_name = {row.split("|")[1].strip(): row for row in rows[2:]}
    assert by_name["dp"].rstrip(" |").endswith("yes") and by_name["2 ranks"].rstrip(" |").endswith("NO")
    assert "1.00e-04" in by_name["fp32"]  # |P - cpu P|
    results["2 ranks"] = _result()
    assert table(results, plan)[1]


def test_a_failed_run_is_a_row_not_a_crash():
    plan = checks("0")
    results = {c.name: _result() for c in plan} | {"dp": {"error": "CUDA out of memory"}}
    rows, ok = table(results, plan)
    assert not ok and any("failed: CUDA out of memory" in row for row in rows)


def test_without_cuda_it_says_so(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the check would run")
    assert main(["--device", "0"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
