"""``accelgen modelcheck``: random layers on the RTL against the analytical model."""

import json

import pytest
from click.testing import CliRunner

import gen.modelcheck as mc
from gen.cli import main


def test_random_layers_are_seeded_and_within_bounds():
    a = mc.random_layers(50, 7, max_hw=13, max_channels=8)
    assert a == mc.random_layers(50, 7, max_hw=13, max_channels=8)
    assert a != mc.random_layers(50, 8, max_hw=13, max_channels=8)
    for N, C, H, M, R, U, P in a:
        assert 1 <= N <= 2 and 1 <= C <= 8 and 1 <= M <= 8
        assert R in (1, 3, 5) and max(R, 5) <= H <= 13
        assert U in (1, 2) and (U == 1 or R > 1) and 0 <= P <= R // 2
    assert {R for _, _, _, _, R, _, _ in a} == {1, 3, 5}


@pytest.mark.verilator
def test_modelcheck_tiny_layers_within_tolerance(tmp_path):
    """Three random tiny layers: bit-exact (a mismatch would be an error), the JSON holds
    each layer's RTL and model cycles, and the model is within 5% on each."""
    res = CliRunner().invoke(main, ["modelcheck", "--count", "3", "--seed", "5",
                                    "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "modelcheck.json").read_text())
    assert data["summary"]["layers"] == 3 and data["summary"]["over_tolerance"] == 0
    for row in data["layers"]:
        assert row["rtl"] > 0 and row["model"] > 0
        assert row["error"] == pytest.approx((row["model"] - row["rtl"]) / row["rtl"])
        assert abs(row["error"]) <= mc.TOLERANCE
    assert data["summary"]["max_abs_error"] == max(abs(r["error"]) for r in data["layers"])
    assert "3 layers: mean |error|" in res.output


@pytest.mark.verilator
def test_modelcheck_exits_nonzero_when_a_layer_misses(tmp_path, monkeypatch):
    """With a tolerance no error can meet, every layer is a miss and the exit status is 1."""
    monkeypatch.setattr(mc, "TOLERANCE", -1.0)
    res = CliRunner().invoke(main, ["modelcheck", "--count", "1", "--seed", "5",
                                    "-o", str(tmp_path)])
    assert res.exit_code == 1, res.output
    assert "<-- over" in res.output and "1 over" in res.output


def test_modelcheck_rejects_a_bad_count():
    res = CliRunner().invoke(main, ["modelcheck", "--count", "0"])
    assert res.exit_code == 2 and "--count" in res.output
