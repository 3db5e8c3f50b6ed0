"""scripts/option_sweep.py: option sets parsed and checked, baselines once, one INR row per set."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("astra_inr_option_sweep_script",
                                                  ROOT / "scripts" / "option_sweep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_configurations_are_parsed_and_checked(sweep):
    assert sweep.parse_config("defaults=") == ("defaults", {})
    assert sweep.parse_config("x=tv_weight=0.05; iterations=1000;fit_level=false;scale=auto") == (
        "x", {"tv_weight": 0.05, "iterations": 1000, "fit_level": False, "scale": "auto"})
    with pytest.raises(argparse.ArgumentTypeError, match="'tv'"):
        sweep.parse_config("x=tv=0.1")
    with pytest.raises(argparse.ArgumentTypeError, match="tv_weight"):
        sweep.parse_config("x=tv_weight=lots")
    with pytest.raises(argparse.ArgumentTypeError, match="LABEL="):
        sweep.parse_config("tv_weight")
    with pytest.raises(argparse.ArgumentTypeError, match="not KEY=VALUE"):
        sweep.parse_config("x=width")


def test_tiny_sweep_runs_baselines_once_and_inr_per_configuration(sweep, tmp_path, capsys):
    small = "iterations=3;width=16;depth=1"
    rc = sweep.main(["--quick", "--cases", "ct-30-n0", "--device", "cpu", "--out", str(tmp_path),
                     "--config", f"a={small}", "--config", f"b={small};tv_weight=0"])
    assert rc == 0
    data = json.loads((tmp_path / "option_sweep.json").read_text())
    assert data["complete"] is True
    case = data["cases"]["ct-30-n0"]
    assert sorted(case["baselines"]) == ["CGLS", "FBP", "SIRT"]
    best = max(b["psnr"] for b in case["baselines"].values())
    for label in ("a", "b"):
        row = case["configs"][label]
        assert row["iterations"] == 3 and row["iteration_choice"] == "given"
        assert row["margin_db"] == pytest.approx(row["psnr"] - best)
    assert case["configs"]["b"]["tv_weight_final"] == 0.0
    assert case["configs"]["b"]["options"] == {"iterations": 3, "width": 16, "depth": 1,
                                               "tv_weight": 0}
    table = capsys.readouterr().out
    assert "| ct-30-n0 | a |" in table and "| ct-30-n0 | b |" in table


def test_labels_must_differ(sweep):
    with pytest.raises(SystemExit):
        sweep.main(["--cases", "ct-30-n0", "--config", "a=", "--config", "a=tv_weight=0"])
