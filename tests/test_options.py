"""commands/options.py: one flag table for val, eval and bench, its defaults and types ValConfig's own."""
from dataclasses import fields

import pytest

from detval.cli import build_parser
from detval.commands.options import RUN_FLAGS, config_from_args
from detval.config import ConfigError, ValConfig


def _config(*argv: str) -> ValConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_defaults_are_valconfigs():
    assert _config("val", "--weights", "w.pt", "--data", "d.yaml") == ValConfig(weights="w.pt", data="d.yaml")
    assert _config("bench", "--weights", "w.pt", "--data", "d.yaml") == ValConfig(weights="w.pt", data="d.yaml")
    assert _config("eval", "--raw", "r") == ValConfig(weights="", data="", save_raw="r", device="cpu")


def test_val_sets_every_valconfig_field():
    dests = {f.field for f in RUN_FLAGS if "val" in f.commands}
    assert dests == {f.name for f in fields(ValConfig)}
    assert all(f.commands <= {"val", "eval", "bench"} for f in RUN_FLAGS)


def test_values_parse_to_the_fields_types():
    cfg = _config("val", "--weights", "w.pt", "--data", "d.yaml", "--img", "320", "--conf-thres", "0.1",
                  "--threads", "3", "--no-plots", "--half", "--cache", "disk", "--save-raw", "raw")
    assert (cfg.imgsz, cfg.conf_thres, cfg.threads, cfg.plots, cfg.half, cfg.cache, cfg.save_raw) == (
        320, 0.1, 3, False, True, "disk", "raw")
    with pytest.raises(SystemExit):  # argparse: not an int
        _config("val", "--weights", "w.pt", "--data", "d.yaml", "--imgsz", "big")


def test_commands_take_only_their_flags():
    with pytest.raises(SystemExit):
        _config("eval", "--raw", "r", "--weights", "w.pt")
    with pytest.raises(SystemExit):
        _config("eval", "--raw", "r", "--device", "0")  # a re-evaluation runs on the CPU
    with pytest.raises(SystemExit):
        _config("bench", "--weights", "w.pt", "--data", "d.yaml", "--save-json")


def test_task_speed_overrides_thresholds_and_plots_as_val_py():
    for cfg in (ValConfig(weights="w", data="d", task="speed", conf_thres=0.1, plots=True),
                _config("val", "--weights", "w", "--data", "d", "--task", "speed", "--conf-thres", "0.1")):
        assert (cfg.conf_thres, cfg.iou_thres, cfg.plots) == (0.25, 0.45, False)
    assert ValConfig(weights="w", data="d", task="val", conf_thres=0.1).conf_thres == 0.1


def test_bad_settings_are_config_errors_and_value_errors():
    with pytest.raises(ConfigError, match="--coco-backend"):
        ValConfig(weights="w", data="d", coco_backend="nope")
    with pytest.raises(ValueError, match="--conf-thres"):
        ValConfig(weights="w", data="d", conf_thres=2)
