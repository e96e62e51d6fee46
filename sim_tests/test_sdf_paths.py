"""fpga.sdf_paths: longest register-to-register paths from a hand-made nextpnr-style SDF."""

import pytest

from fpga.sdf_paths import longest_paths, main

# a.q -> lut1 -> lut2 -> b.d (long), a.q -> c.d (short), GND -> lut2 (constant, skipped),
# b.q -> lut3 -> lut3 (a loop, cut) -> c.d
SDF = r"""
(DELAYFILE
  (SDFVERSION "3.0")
  (DESIGN "top")
  (TIMESCALE 1ps)
  (CELL (CELLTYPE "top") (INSTANCE )
    (DELAY (ABSOLUTE
      (INTERCONNECT core.a/Q core.lut1/A (1000:1000:1000) (1000:1000:1000))
      (INTERCONNECT core.lut1/F core.lut2/B (2000:2000:2000) (2100:2100:2100))
      (INTERCONNECT \$PACKER_GND/F core.lut2/A (9000:9000:9000) (9000:9000:9000))
      (INTERCONNECT core.lut2/F core.b/DI (500:500:500) (500:500:500))
      (INTERCONNECT core.a/Q core.c/DI (700:700:700) (700:700:700))
      (INTERCONNECT core.b/Q core.lut3/A (100:100:100) (100:100:100))
      (INTERCONNECT core.lut3/F core.lut3/B (100:100:100) (100:100:100))
      (INTERCONNECT core.lut3/F core.c/M (100:100:100) (100:100:100))
    )))
  (CELL (CELLTYPE "TRELLIS_FF") (INSTANCE core.a)
    (DELAY (ABSOLUTE (IOPATH (posedge CLK) Q (400:400:400) (450:450:450))))
    (TIMINGCHECK (SETUPHOLD DI (posedge CLK) (100:100:100) (0:0:0))))
  (CELL (CELLTYPE "TRELLIS_FF") (INSTANCE core.b)
    (DELAY (ABSOLUTE (IOPATH (posedge CLK) Q (400:400:400) (450:450:450))))
    (TIMINGCHECK (SETUPHOLD DI (posedge CLK) (150:150:150) (0:0:0))))
  (CELL (CELLTYPE "TRELLIS_FF") (INSTANCE core.c)
    (DELAY (ABSOLUTE (IOPATH (posedge CLK) Q (400:400:400) (450:450:450))))
    (TIMINGCHECK (SETUPHOLD DI (posedge CLK) (100:100:100) (0:0:0))
                 (SETUPHOLD M (posedge CLK) (80:80:80) (0:0:0))))
  (CELL (CELLTYPE "TRELLIS_COMB") (INSTANCE core.lut1)
    (DELAY (ABSOLUTE (IOPATH A F (300:300:300) (310:310:310)))))
  (CELL (CELLTYPE "TRELLIS_COMB") (INSTANCE core.lut2)
    (DELAY (ABSOLUTE (IOPATH A F (300:300:300) (300:300:300))
                     (IOPATH B F (250:250:250) (260:260:260)))))
  (CELL (CELLTYPE "TRELLIS_COMB") (INSTANCE core.lut3)
    (DELAY (ABSOLUTE (IOPATH A F (200:200:200) (200:200:200))
                     (IOPATH B F (200:200:200) (200:200:200)))))
)
"""


def test_worst_path_sums_the_largest_arcs_and_skips_constants():
    paths = longest_paths(SDF, count=10, group_depth=2)
    # clk->q 450 + net 1000 + lut1 310 + net 2100 + lut2 260 + net 500 + setup 150 ps
    assert paths[0].start == "core.a/CLK" and paths[0].end == "core.b/DI"
    assert paths[0].delay == pytest.approx(4.770)
    assert [c for c, _ in paths[0].cells] == ["core.a", "core.lut1", "core.lut2", "core.b"]
    assert paths[0].cells[-1][1] == pytest.approx(4.620)        # arrival at b (no setup)
    assert all("PACKER" not in p.start for p in paths)


def test_one_path_per_module_pair_and_loops_cut():
    paths = longest_paths(SDF, count=10, group_depth=1)
    assert len(paths) == 1                                      # all in module "core"
    paths = longest_paths(SDF, count=10, group_depth=2)
    ends = {p.end: round(p.delay, 3) for p in paths}
    # a.q -> c.DI: 450 + 700 + 100; b.q -> lut3 (its loop through B is cut) -> c.M:
    # 450 + 100 + 200 + 100 + 80
    assert ends == {"core.b/DI": 4.770, "core.c/DI": 1.250, "core.c/M": 0.930}
    assert [p.end for p in paths] == ["core.b/DI", "core.c/DI", "core.c/M"]


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ValueError, match="not an SDF"):
        longest_paths("(CELL (INSTANCE x))")
    with pytest.raises(ValueError, match="unbalanced"):
        longest_paths(SDF[:200])
    bad = tmp_path / "bad.sdf"
    bad.write_text("hello")
    assert main([str(bad)]) == 1
    assert "not an SDF" in capsys.readouterr().err
    good = tmp_path / "good.sdf"
    good.write_text(SDF)
    assert main([str(good), "-n", "1", "-v"]) == 0
    out = capsys.readouterr().out
    assert "4.77 ns" in out and "core.lut1" in out
