"""``accelgen bench``: the AlexNet table, its files, and RTL against the analytical model."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from gen.bench import ALEXNET, run_bench, synthetic_layer
from gen.cli import main


def test_alexnet_table_matches_benchmarks_md():
    """Shapes and MACs per image of grouped AlexNet (BENCHMARKS.md table)."""
    macs = {l.name: l.macs_per_image() for l in ALEXNET}
    assert macs["conv1"] == 96 * 55 * 55 * 3 * 11 * 11            # 105.4 M
    assert macs["conv2"] == 256 * 27 * 27 * 48 * 5 * 5             # 223.9 M
    assert round(sum(macs.values()) / 1e6, 1) == 665.8
    assert sum(l.eyeriss_cycles for l in ALEXNET) == pytest.approx(23.06e6)


def test_synthetic_data_zero_fraction_and_seed():
    layer = ALEXNET[4]
    x, w, b = synthetic_layer(layer, 1, seed=3)
    assert x.shape == (1, 384, 13, 13) and w.shape == (256, 192, 3, 3) and b.shape == (256,)
    assert abs(np.mean(x == 0) - layer.zero_fraction) < 0.01
    x2, w2, _ = synthetic_layer(layer, 1, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(w, w2)


def test_bench_small_preset_rtl_matches_model_and_writes_files(tmp_path):
    """One reduced layer on the small preset: bit-exact (run_bench raises otherwise), the
    RTL cycles within 5% of the analytical model, and CSV/JSON/PNG written."""
    res = CliRunner().invoke(main, ["bench", "alexnet", "--layers", "conv5", "--batch", "1",
                                    "--preset", "small", "--scale-c", "16", "--scale-m", "16",
                                    "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "bench.json").read_text())
    (row,) = data["layers"]
    assert row["status"] == "bit-exact"
    assert row["C"] == 24 and row["M"] == 16
    assert abs(row["model_cycles"] / row["cycles"] - 1) <= 0.05
    assert row["utilization"] == pytest.approx(row["macs"] / (row["cycles"] * 64))
    assert (tmp_path / "bench.png").stat().st_size > 10_000
    assert "conv5" in (tmp_path / "bench.csv").read_text()
    assert "bit-exact" in res.output


def test_bench_rejects_unknown_layers_and_reports_unmappable():
    res = CliRunner().invoke(main, ["bench", "alexnet", "--layers", "conv9", "--model-only"])
    assert res.exit_code != 0 and "conv9" in res.output
    # CONV1's 227x227 plane does not fit tiny's GLB: it runs as row strips.
    rows = run_bench("alexnet", layers=["conv1"], batch=1, preset_name="tiny",
                     model_only=True, progress=False, echo=lambda *a: None)
    assert rows[0]["status"] == "model only" and rows[0]["strips"] > 1
    assert "row strips" in rows[0]["mapping"] and rows[0]["model_cycles"] > 0
    # An 11-wide filter row cannot fit an 8-word ifmap spad, strips or not.
    rows = run_bench("alexnet", layers=["conv1"], batch=1, preset_name="tiny",
                     overrides=("ifmap_spad_depth=8",), model_only=True, progress=False,
                     echo=lambda *a: None)
    assert rows[0]["status"] == "not mappable" and "ifmap spad" in rows[0]["reason"]


def test_verilator_threads_choice_and_validation(monkeypatch):
    """``auto_threads``: 2 only for arrays of THREADS_MIN_PES+ PEs on THREADS_MIN_CORES+
    cores (one thread on this 2-core machine); the target, run_bench and the CLI reject a
    thread count below 1."""
    import os

    from hw.config import preset
    from sw_driver.targets import (THREADS_MIN_CORES, THREADS_MIN_PES, VerilatorTarget,
                                   auto_threads)

    monkeypatch.setattr(os, "cpu_count", lambda: THREADS_MIN_CORES)
    assert preset("eyeriss").num_pes >= THREADS_MIN_PES > preset("small").num_pes
    assert auto_threads(preset("eyeriss")) == 2
    assert auto_threads(preset("small")) == 1
    for cores in (1, 2, THREADS_MIN_CORES - 1):
        monkeypatch.setattr(os, "cpu_count", lambda c=cores: c)
        assert auto_threads(preset("eyeriss")) == 1
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads"):
            VerilatorTarget(preset("tiny"), threads=bad)
    assert VerilatorTarget(preset("tiny"), threads=3).threads == 3
    with pytest.raises(ValueError, match="threads"):
        run_bench("alexnet", layers=["conv5"], batch=1, preset_name="tiny", threads=0,
                  progress=False, echo=lambda *a: None)
    for bad in ("0", "two"):
        res = CliRunner().invoke(main, ["bench", "alexnet", "--threads", bad, "--model-only"])
        assert res.exit_code != 0 and "--threads" in res.output
