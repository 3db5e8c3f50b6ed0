"""scripts/benchmark.py: a tiny run's JSON and table, failing cases, the speed hook, case choice."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--quick", "--cases", "ct-30-n0", "--methods", "FBP,SIRT", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def bench():
    """The benchmark script imported as a module (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("astra_inr_benchmark_script",
                                                  ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_tiny_run_writes_json_and_table(bench, tmp_path, capsys):
    rc = bench.main([*TINY, "--out", str(tmp_path), "--figures", str(tmp_path / "fig")])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmark.json", "fig"]  # no temporary
    data = json.loads((tmp_path / "benchmark.json").read_text())
    assert data["complete"] is True and data["wall_seconds"] > 0
    assert data["mode"]["name"] == "quick" and data["mode"]["ct_size"] == 64
    assert data["mode"]["inr"]["defaults"] is False and data["mode"]["inr"]["options"] == {"width": 128}
    assert data["methods"] == ["FBP", "SIRT"]
    machine = data["machine"]
    for key in ("platform", "cpu_count", "astra_use_cuda", "gpu", "torch_cuda_available"):
        assert key in machine
    assert machine["versions"]["torch"] and machine["versions"]["astra-toolbox"]
    assert data["speed"]["status"] == "skipped"        # --quick runs no speed rows by default

    assert list(data["cases"]) == ["ct-30-n0"]
    case = data["cases"]["ct-30-n0"]
    assert case["status"] == "ok" and case["data_shape"] == [1, 30, 96]
    assert case["seconds"] >= case["build_seconds"] > 0 and len(case["load_average_after"]) == 3
    assert case["parameters"] == {"kind": "phantom", "phantom": "ct", "size": 64, "angles": 30,
                                  "noise": 0.0, "limited_deg": None, "seed": 0}
    assert case["reference"] == "the phantom" and "ct_small_attenuation" in case["case"]["input"]
    assert case["options"]["size"] == 64 and case["options"]["device"] == "cpu"
    assert case["figures"] == str(tmp_path / "fig" / "ct-30-n0")
    assert (tmp_path / "fig" / "ct-30-n0" / "comparison.png").is_file()
    methods = case["methods"]
    assert list(methods) == ["FBP", "SIRT"]
    for m in methods.values():
        assert set(m) >= {"psnr", "ssim", "seconds", "iterations", "iteration_choice"}
        assert 10 < m["psnr"] < 60 and 0 < m["ssim"] <= 1 and m["seconds"] >= 0
    assert methods["FBP"]["iterations"] == 1
    assert "best PSNR against the reference" in methods["SIRT"]["iteration_choice"]
    assert methods["SIRT"]["psnr"] > methods["FBP"]["psnr"] + 3     # 30 noise-free angles
    assert case["winner"] == "SIRT" and case["inr_margin_db"] is None
    assert case["inr_margin_ssim"] is None
    assert case["target"]["kind"] == "sparse, limited or noisy" and case["target"]["met"] is None
    assert data["target_summary"] == "Target met on 0 of 0 scored case(s)."

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == ("| case | FBP | SIRT | best PSNR | INR - best classical (dB / SSIM) "
                        "| target |")
    row = next(line for line in lines if line.startswith("| ct-30-n0 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].startswith(f"{methods['FBP']['psnr']:.2f} / {methods['FBP']['ssim']:.3f} / ")
    assert cells[2].startswith(f"{methods['SIRT']['psnr']:.2f} / ")
    assert cells[3:] == ["SIRT", "n/a", "n/a"]
    assert data["table"].startswith(lines[0])
    assert data["target_summary"] in out and "the target is for INR's defaults" in out


def test_failing_case_is_reported_and_speed_rows_come_from_the_hook(bench, tmp_path, capsys,
                                                                     monkeypatch):
    def broken_build(spec, mode, args):
        raise RuntimeError("simulated failure")

    seen = {}

    def fake_speed(args):
        seen["quick"] = args.quick
        return [{"row": "2D 64^2", "iterations_per_second": 12.5, "peak_memory_gb": None,
                 "curve": [[0, 1.0]]}]

    snapshots = []
    real_write = bench.write_json_atomic

    def recording_write(path, data):
        snapshots.append(json.loads(json.dumps(data, default=str)))
        real_write(path, data)

    monkeypatch.setattr(bench, "build_case", broken_build)
    monkeypatch.setattr(bench, "write_json_atomic", recording_write)
    monkeypatch.setitem(sys.modules, "astra_inr.speed",
                        types.SimpleNamespace(run_speed_benchmarks=fake_speed))
    json_path = tmp_path / "sub" / "b.json"
    rc = bench.main([*TINY, "--speed", "--json", str(json_path)])
    assert rc == 1                                      # a failed case fails the run ...
    data = json.loads(json_path.read_text())            # ... after writing everything
    case = data["cases"]["ct-30-n0"]
    assert case["status"] == "error" and case["error"] == "RuntimeError: simulated failure"
    assert "Traceback" in case["traceback"] and "methods" not in case
    # Written after the case (incomplete) and again at the end.
    assert len(snapshots) == 2 and snapshots[0]["complete"] is False
    assert snapshots[0]["cases"]["ct-30-n0"]["status"] == "error"
    assert seen == {"quick": True}
    assert data["speed"]["status"] == "ok" and data["speed"]["rows"][0]["curve"] == [[0, 1.0]]
    out = capsys.readouterr().out
    assert "| ct-30-n0 | - | - | error: RuntimeError: simulated failure | - |" in out
    assert "| row | iterations_per_second | peak_memory_gb |" in out      # lists stay in the JSON
    assert "| 2D 64^2 | 12.5 | - |" in out


def test_missing_speed_module_is_reported(bench, monkeypatch):
    monkeypatch.setitem(sys.modules, "astra_inr.speed", None)     # import raises ModuleNotFoundError
    assert bench.speed_rows(bench.build_parser().parse_args([])) is None
    section = bench.speed_section(bench.build_parser().parse_args([]), lambda msg: None)
    assert section["status"] == "unavailable" and "does not exist" in section["note"]


def test_case_selection_and_winner(bench):
    quick = [c.id for c in bench.select_cases(bench.QUICK_MODE, None)]
    assert quick == ["ct-30-n0", "ct-60-n3", "ct-lim120-n1", "sl-30-n1", "tooth-step4",
                     "neutron-quarter"]
    every = [c.id for c in bench.all_cases(bench.DEFAULT_MODE)]
    assert len(every) == 16 and len(set(every)) == 16
    assert {"ct-60-n1", "sl-lim120-n1", "sl-30-n0"} <= set(every)
    assert [c.id for c in bench.select_cases(bench.DEFAULT_MODE, "sl-60-*,tooth*")] == [
        "sl-60-n0", "sl-60-n1", "sl-60-n3", "tooth-step4"]
    limited = next(c for c in bench.all_cases(bench.DEFAULT_MODE) if c.id == "sl-lim120-n1")
    assert limited.params["limited_deg"] == 120 and limited.params["angles"] == 60
    assert limited.params["size"] == 256
    with pytest.raises(ValueError, match="no case matches"):
        bench.select_cases(bench.DEFAULT_MODE, "nothing-*")
    assert bench.main(["--cases", "nothing-*"]) == 2

    rows = {"FBP": {"psnr": 20.0}, "SIRT": {"psnr": 25.0}, "INR": {"psnr": 26.5}}
    assert bench.winner_and_margin(rows) == ("INR", pytest.approx(1.5))
    assert bench.winner_and_margin({"INR": {"psnr": 20.0}}) == ("INR", None)
    assert bench.winner_and_margin({"FBP": {"psnr": None}}) == (None, None)


def test_target_verdict_per_kind_of_case(bench):
    phantom = {"kind": "phantom", "phantom": "ct", "size": 128, "angles": 60, "noise": 0.0,
               "limited_deg": None, "seed": 0}
    # 60 angles count as sparse: both margins must reach the target, each on its own.
    assert bench.target_verdict(phantom, 1.5, 0.03)["met"] is True
    assert bench.target_verdict(phantom, 1.49, 0.2)["met"] is False
    assert bench.target_verdict(phantom, 3.0, 0.029)["met"] is False
    assert bench.target_verdict(phantom, None, 0.1)["met"] is None
    full_clean = {**phantom, "angles": 180}
    verdict = bench.target_verdict(full_clean, -0.5, -0.2)
    assert verdict["kind"] == "full and clean" and verdict["met"] is True
    assert bench.target_verdict(full_clean, -0.51, 0.1)["met"] is False
    for hard in ({**full_clean, "noise": 0.01}, {**full_clean, "limited_deg": 120.0},
                 {"kind": "scan", "scan": "tooth", "subset_step": 1}):
        assert bench.target_verdict(hard, 1.0, 0.1)["met"] is False

    rows = {"FBP": {"psnr": 20.0, "ssim": 0.9}, "SIRT": {"psnr": 25.0, "ssim": 0.7},
            "INR": {"psnr": 26.5, "ssim": 0.92}}
    # The best SSIM among the classical methods is FBP's, not the PSNR winner's.
    assert bench.inr_margin(rows, "ssim") == pytest.approx(0.02)
    assert bench.inr_margin({"INR": {"ssim": 0.5}}, "ssim") is None
    entries = [{"id": "a", "status": "ok", "target": {"met": True}},
               {"id": "b", "status": "ok", "target": {"met": False}},
               {"id": "c", "status": "ok", "target": {"met": None}},
               {"id": "d", "status": "error"}]
    assert bench.target_summary(entries) == "Target met on 1 of 2 scored case(s); missed: b."


def test_tv_is_printed_beside_the_target_not_in_it(bench):
    rows = {"FBP": {"psnr": 20.0, "ssim": 0.5}, "SIRT": {"psnr": 25.0, "ssim": 0.7},
            "TV": {"psnr": 29.0, "ssim": 0.95}, "INR": {"psnr": 27.0, "ssim": 0.9}}
    # The target is the issue's: the best of FBP, SIRT and CGLS.
    assert bench.inr_margin(rows, "psnr") == pytest.approx(2.0)
    assert bench.inr_margin(rows, "ssim") == pytest.approx(0.2)
    assert bench.inr_margin(rows, "psnr", ("TV",)) == pytest.approx(-2.0)
    assert bench.inr_margin({"INR": {"psnr": 1.0}}, "psnr", ("TV",)) is None
    entry = {"id": "sl-30-n0", "status": "ok", "methods": {m: {**v, "seconds": 1.0}
                                                           for m, v in rows.items()},
             "winner": "TV", "inr_margin_db": 2.0, "inr_margin_ssim": 0.2,
             "inr_margin_tv_db": -2.0, "inr_margin_tv_ssim": -0.05, "target": {"met": True}}
    failed = {"id": "x", "status": "error", "error": "boom"}
    lines = bench.quality_table([entry, failed], list(rows)).splitlines()
    assert lines[0].endswith("| target | INR - TV (dB / SSIM) |")
    assert lines[2].endswith("| TV | +2.00 / +0.200 | met | -2.00 / -0.050 |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    # Without TV among the methods the column is left out.
    assert "INR - TV" not in bench.quality_table([entry], ["FBP", "SIRT", "INR"])


def test_heldout_table_lists_real_scans_only(bench):
    phantom_case = {"id": "ct-30-n0", "status": "ok",
                    "methods": {"FBP": {"psnr": 20.0}, "INR": {"psnr": 22.0}}}
    assert bench.heldout_table([phantom_case], ["FBP", "INR"]) is None
    real = {"id": "tooth-step4", "status": "ok", "methods": {
        "FBP": {"heldout_residual": 0.06, "heldout_residual_ramp": 0.22},
        "SIRT": {"heldout_residual": 0.07, "heldout_residual_ramp": 0.23},
        "INR": {"heldout_residual": 0.09, "heldout_residual_ramp": 0.21}}}
    failed = {"id": "neutron-quarter", "status": "error", "error": "boom"}
    table = bench.heldout_table([phantom_case, real, failed], ["FBP", "SIRT", "INR"])
    lines = table.splitlines()
    assert lines[0] == "| case (held-out angles) | FBP | SIRT | INR | lowest ramp-weighted |"
    assert lines[2] == "| tooth-step4 | 0.0600 / 0.2200 | 0.0700 / 0.2300 | 0.0900 / 0.2100 | INR |"
    assert "ct-30-n0" not in table and "neutron" not in table


def test_independent_table_lists_real_scans_with_inr_margin(bench):
    phantom_case = {"id": "ct-30-n0", "status": "ok", "methods": {"INR": {"psnr": 22.0}}}
    assert bench.independent_table([phantom_case], ["INR"]) is None
    real = {"id": "neutron-quarter", "status": "ok", "independent_reference": "SIRT on the left-out",
            "methods": {"FBP": {"independent_psnr": 30.0, "independent_ssim": 0.60},
                        "SIRT": {"independent_psnr": 33.5, "independent_ssim": 0.80},
                        "INR": {"independent_psnr": 34.0, "independent_ssim": 0.85}}}
    lines = bench.independent_table([phantom_case, real], ["FBP", "SIRT", "INR"]).splitlines()
    assert lines[2] == ("| neutron-quarter | 30.00 / 0.600 | 33.50 / 0.800 | 34.00 / 0.850 "
                        "| +0.50 / +0.050 |")


def test_independent_reference_is_sirt_on_the_left_out_angles_only(bench):
    import numpy as np

    from astra_inr.cases import (AngleSubset, case_from_phantom, held_out_angles,
                                 reference_from_full_data, subset_angles)
    from astra_inr.compare import compare_methods, score
    from astra_inr.recon import ReconOptions

    y, x = np.mgrid[-1:1:32j, -1:1:32j]
    image = ((x ** 2 + y ** 2) < 0.5).astype(np.float32) + 0.5 * (np.abs(x - 0.2) < 0.15)
    sino, _, _ = case_from_phantom(image, 40, noise=0.02, seed=1)
    subset = AngleSubset(step=2)
    given, left_out = subset_angles(sino, subset), held_out_angles(sino, subset)
    options = ReconOptions(device="cpu")
    results = compare_methods(given, ["FBP"], options)
    summaries = {"FBP": {}}
    volume, note = bench.independent_reference(left_out, options, 20)
    bench.add_independent_scores(results, summaries, volume)
    reference = reference_from_full_data(left_out, options, 20)[0]
    assert summaries["FBP"]["independent_psnr"] == pytest.approx(
        score(results["FBP"].volume, reference)[0])
    # Not the reference from the angles the method was given.
    assert summaries["FBP"]["independent_psnr"] != pytest.approx(
        score(results["FBP"].volume, reference_from_full_data(given, options, 20)[0])[0])
    assert "left-out 20 angles" in note


def test_reference_ceiling_estimates_the_references_own_noise(bench):
    import numpy as np

    from astra_inr.cases import (AngleSubset, case_from_phantom, held_out_angles,
                                 reference_from_full_data, subset_angles)
    from astra_inr.compare import score
    from astra_inr.metrics import psnr
    from astra_inr.recon import ReconOptions

    y, x = np.mgrid[-1:1:48j, -1:1:48j]
    image = ((x ** 2 + y ** 2) < 0.5).astype(np.float32) + 0.5 * (np.abs(x - 0.2) < 0.15)
    noisy, _, _ = case_from_phantom(image, 90, noise=0.03, seed=1)
    clean, _, _ = case_from_phantom(image, 90, noise=0.0, seed=1)
    options = ReconOptions(device="cpu")
    reference = reference_from_full_data(noisy, options, 30)[0]
    # What the reference would be without noise: the same SIRT on the noise-free data.
    noise_free = reference_from_full_data(clean, options, 30)[0]
    subset = AngleSubset(step=4)
    ceiling = bench.reference_ceiling(subset_angles(noisy, subset), held_out_angles(noisy, subset),
                                      reference, options, 30)
    assert "error" not in ceiling, ceiling
    actual_rms = float(np.sqrt(np.mean((reference - noise_free) ** 2)))
    rng = float(reference.max() - reference.min())
    assert ceiling["noise_rms"] == pytest.approx(actual_rms / rng, rel=0.25)
    assert ceiling["psnr"] == pytest.approx(psnr(noise_free, reference), abs=0.5)
    # An upper estimate of the SSIM (measured here: 0.939 against 0.897).
    actual_ssim = score(noise_free, reference)[1]
    assert actual_ssim <= ceiling["ssim"] <= actual_ssim + 0.06
    # Within the object the clipping of local variances hardly matters (measured: 0.918 both).
    actual_object = bench.object_scores(noise_free, reference)[0]
    assert ceiling["object_ssim"] == pytest.approx(actual_object, abs=0.02)
    assert "90 angles (30 and 30 iterations)" in ceiling["how"]
    # An aid to reading the scores: a failure is reported, never raised.
    broken = bench.reference_ceiling(subset_angles(noisy, subset), held_out_angles(noisy, subset),
                                     reference[..., :10], options, 30)
    assert set(broken) == {"error"}


def test_ceiling_table_puts_the_bar_beside_the_noise_free_score(bench):
    real = {"id": "neutron-quarter", "status": "ok",
            "reference_ceiling": {"psnr": 48.0, "ssim": 0.975},
            "methods": {"FBP": {"psnr": 30.0, "ssim": 0.60},
                        "SIRT": {"psnr": 42.7, "ssim": 0.956},
                        "INR": {"psnr": 41.0, "ssim": 0.950}}}
    failed_ceiling = dict(real, id="tooth-step4", reference_ceiling={"error": "boom"})
    assert bench.ceiling_table([failed_ceiling]) is None
    lines = bench.ceiling_table([real, failed_ceiling]).splitlines()
    assert lines[2] == "| neutron-quarter | 42.70 / 0.956 | 41.00 / 0.950 | 44.20 / 0.986 | 48.00 / 0.975 |"
    assert len([line for line in lines if line.startswith("| ")]) == 2


def test_object_scores_leave_out_the_empty_space_around_the_object(bench):
    import numpy as np

    y, x = np.mgrid[-1:1:64j, -1:1:64j]
    truth = ((x ** 2 + y ** 2) < 0.3) * (1.0 + 0.3 * np.sin(6 * x))
    noise = 0.03 * np.random.default_rng(2).standard_normal(truth.shape)
    reference = np.clip(truth + noise, 0.0, None)[None]        # a non-negative SIRT's air
    within, share = bench.object_scores(truth[None], reference)
    assert 0.24 < share < 0.45          # the disc (0.24 of the field) and a margin of about 5 pixels
    assert within > bench.score(truth[None], reference)[1] + 0.05
    summaries = {"INR": {}, "SIRT": {}}
    results = {name: type("R", (), {"volume": v})()
               for name, v in (("INR", truth[None]), ("SIRT", 0.9 * truth[None]))}
    assert bench.add_object_scores(results, summaries, reference) == pytest.approx(share)
    assert summaries["INR"]["object_ssim"] == pytest.approx(within)
    assert summaries["SIRT"]["object_ssim"] < within
    # An empty slice (the end of a stack) has no object: left out, not a failure.
    stack = np.stack([reference[0], np.zeros_like(reference[0])])
    image = np.stack([truth, np.zeros_like(truth)])
    assert bench.object_scores(image, stack) == pytest.approx((within, share / 2))
    speck = np.zeros((1, 64, 64))
    speck[0, 0, 0] = 1.0                        # an object in the corner, within the border
    within_speck, share_speck = bench.object_scores(np.zeros_like(speck), speck)
    assert within_speck is None and 0 < share_speck < 0.01


def test_object_table_puts_the_noise_free_score_beside_the_methods(bench):
    real = {"id": "tooth-step4", "status": "ok", "object_fraction": 0.41,
            "reference_ceiling": {"psnr": 37.0, "ssim": 0.935, "object_ssim": 0.894},
            "methods": {"SIRT": {"object_ssim": 0.744}, "INR": {"object_ssim": 0.820}}}
    no_ceiling = dict(real, id="neutron-quarter", reference_ceiling={"error": "boom"})
    phantom_case = {"id": "ct-30-n0", "status": "ok", "methods": {"INR": {"ssim": 0.9}}}
    assert bench.object_table([phantom_case], ["SIRT", "INR"]) is None
    lines = bench.object_table([phantom_case, real, no_ceiling], ["SIRT", "INR"]).splitlines()
    assert lines[0] == ("| case (SSIM within the object) | SIRT | INR | INR - best other |"
                        " object's share | a noise-free image |")
    assert lines[1] == "|---|---|---|---|---|---|"
    assert lines[2] == "| tooth-step4 | 0.744 | 0.820 | +0.076 | 0.41 | 0.894 |"
    assert lines[3] == "| neutron-quarter | 0.744 | 0.820 | +0.076 | 0.41 | - |"
