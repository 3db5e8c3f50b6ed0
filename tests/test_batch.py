"""`astra-inr batch`: many scans, failures recorded, resumable, local Dask cluster."""

import json
import shutil
from pathlib import Path

import pytest

from astra_inr.batch import _usable_cores, load_batch, run_batch
from astra_inr.cli import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "scan_dxchange.h5"


def _setup(tmp_path: Path, extra_scans: str = "") -> Path:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(SAMPLE, data / "scan_a.h5")
    shutil.copy(SAMPLE, data / "scan_b.h5")
    (data / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    config = tmp_path / "batch.toml"
    config.write_text(f"""
out = "results"
[defaults]
algorithm = "FBP"
rows = "0:1"
[[scan]]
input = "data/scan_*.h5"
[[scan]]
input = "data/broken.h5"
[[scan]]
input = "data/missing.h5"
[[scan]]
input = "data/scan_a.h5"
name = "a_sirt"
algorithm = "SIRT"
iterations = 10
{extra_scans}
""")
    return config


def test_failures_are_recorded_and_the_others_finish(tmp_path, capsys):
    config = _setup(tmp_path)
    rc = main(["batch", str(config), "--quiet"])
    assert rc == 1                                  # some scan failed
    report = json.loads((tmp_path / "results" / "batch_report.json").read_text())
    status = {s["name"]: s["status"] for s in report["scans"]}
    assert status == {"scan_a": "done", "scan_b": "done", "broken": "failed", "missing": "failed",
                      "a_sirt": "done"}
    errors = {s["name"]: s.get("error", "") for s in report["scans"]}
    assert "broken.h5" in errors["broken"] and "missing.h5" in errors["missing"]
    for name in ("scan_a", "scan_b", "a_sirt"):
        assert (tmp_path / "results" / name / "report.json").is_file()
    assert not (tmp_path / "results" / "broken").exists()
    sirt = json.loads((tmp_path / "results" / "a_sirt" / "report.json").read_text())
    assert sirt["reconstruction"]["algorithm"] == "SIRT" and sirt["reconstruction"]["iterations"] == 10
    assert "2 failed" in capsys.readouterr().err


def test_a_second_run_skips_finished_scans_and_redoes_interrupted_ones(tmp_path):
    config = _setup(tmp_path)
    run_batch(config, quiet=True)
    results = tmp_path / "results"
    stamp = (results / "scan_a" / "report.json").read_text()
    # Simulate a crash while scan_b was being written: only a temporary folder is left.
    shutil.rmtree(results / "scan_b")
    (results / ".tmp-scan_b-deadbeef").mkdir()
    (results / ".tmp-scan_b-deadbeef" / "slice_00000.tif").write_bytes(b"partial")
    report = run_batch(config, quiet=True)
    status = {s["name"]: s["status"] for s in report["scans"]}
    assert status["scan_a"] == "skipped" and status["a_sirt"] == "skipped"
    assert status["scan_b"] == "done"
    assert (results / "scan_a" / "report.json").read_text() == stamp
    assert not list(results.glob(".tmp-*"))


def test_config_errors_name_the_file_and_entry(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('out = "r"\n[defaults]\nalgoritm = "FBP"\n[[scan]]\ninput = "x"\n')
    with pytest.raises(ValueError, match=r"bad.toml \[defaults\].*did you mean 'algorithm'"):
        load_batch(bad)
    bad.write_text('out = "r"\n[[scan]]\ninput = "x"\nbinning = 0\n')
    with pytest.raises(ValueError, match=r"\[\[scan\]\] #1.*binning"):
        load_batch(bad)
    bad.write_text('[[scan]]\ninput = "x"\n')
    with pytest.raises(ValueError, match="missing 'out'"):
        load_batch(bad)
    bad.write_text('out = "r"\n[[scan]]\ninput = "a.h5"\n[[scan]]\ninput = "b/a.h5"\n')
    with pytest.raises(ValueError, match="distinct 'name'"):
        load_batch(bad)


def test_local_dask_cluster_with_two_workers(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)    # Dask's own 1 reaches the workers
    config = _setup(tmp_path)
    report = run_batch(config, workers=2, quiet=True)
    status = {s["name"]: s["status"] for s in report["scans"]}
    assert status == {"scan_a": "done", "scan_b": "done", "broken": "failed", "missing": "failed",
                      "a_sirt": "done"}
    assert report["mode"].startswith("local dask cluster, 2 workers")
    share = max(1, _usable_cores() // 2)
    for scan in report["scans"]:
        if scan["status"] == "done":
            assert scan["cpu_threads"] == share
    again = run_batch(config, workers=2, quiet=True)
    assert {s["name"]: s["status"] for s in again["scans"]}["scan_b"] == "skipped"


def _one_scan_on_one_worker(tmp_path: Path) -> dict:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(SAMPLE, data / "scan.h5")
    config = tmp_path / "batch.toml"
    config.write_text('out = "results"\n[defaults]\nalgorithm = "FBP"\nrows = "0:1"\n'
                      '[[scan]]\ninput = "data/scan.h5"\n')
    return run_batch(config, workers=1, quiet=True)


def test_a_dask_worker_uses_its_share_of_the_cores_not_dasks_one_thread(tmp_path, monkeypatch):
    # Dask spawns workers with OMP_NUM_THREADS=1; a lone worker should still use every core.
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    report = _one_scan_on_one_worker(tmp_path)
    assert report["scans"][0]["cpu_threads"] == _usable_cores()
    result = json.loads((tmp_path / "results" / "scan" / "report.json").read_text())
    assert result["provenance"]["cpu_threads"] == _usable_cores()


def test_a_thread_count_set_for_the_dask_workers_is_kept(tmp_path, monkeypatch):
    # A user's OMP_NUM_THREADS (exported before the batch) reaches the workers over Dask's 1.
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    report = _one_scan_on_one_worker(tmp_path)
    assert report["scans"][0]["cpu_threads"] == 3
