"""`accelgen verilog`: reproducible output, manifest contents, lint-clean for every preset."""

import json

import pytest
from click.testing import CliRunner

from gen.cli import main
from gen.toolchain import lint
from gen.verilog import convert, generate, make_top
from hw.config import PRESETS, AcceleratorConfig

# The designs the generator can emit, each linted for every preset.
LINT_TOPS = ["accelerator", "pe", "glb", "rlc_encoder", "rlc_decoder"]


def test_same_inputs_give_byte_identical_output(tmp_path):
    cfg = PRESETS["tiny"]
    v1, m1 = generate(cfg, tmp_path / "a", top="pe")
    v2, m2 = generate(cfg, tmp_path / "b", top="pe")
    assert v1.read_bytes() == v2.read_bytes()
    assert m1.read_bytes() == m2.read_bytes()


def test_manifest_describes_config_ports_and_hash(tmp_path):
    import hashlib
    cfg = PRESETS["tiny"].replace(psum_width=24)
    vpath, mpath = generate(cfg, tmp_path, top="pe", name="my_pe")
    man = json.loads(mpath.read_text())
    assert man["top"] == "my_pe"
    assert man["config"]["psum_width"] == 24
    assert man["sha256"] == hashlib.sha256(vpath.read_bytes()).hexdigest()
    names = {p["name"]: p for p in man["ports"]}
    assert names["psum_out__payload"]["width"] == 24
    assert names["psum_out__payload"]["dir"] == "output"
    assert names["ifmap_in__payload"]["width"] == cfg.data_width
    assert names["ifmap_in__payload"]["dir"] == "input"
    text = vpath.read_text()
    assert "module my_pe" in text
    for p in man["ports"]:
        assert p["name"] in text


def test_changed_parameter_changes_output(tmp_path):
    v1, _ = generate(PRESETS["tiny"], tmp_path / "a", top="pe")
    v2, _ = generate(PRESETS["tiny"].replace(psum_width=20), tmp_path / "b", top="pe")
    assert v1.read_bytes() != v2.read_bytes()


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("top", LINT_TOPS)
def test_lint_clean(tmp_path, preset, top):
    vpath, _ = generate(PRESETS[preset], tmp_path, top=top)
    result = lint(vpath, top)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_writes_files_and_reports(tmp_path):
    res = CliRunner().invoke(main, ["verilog", "--preset", "tiny", "--top", "pe",
                                    "--set", "pe_rows=2", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    man = json.loads((tmp_path / "pe.json").read_text())
    assert man["config"]["pe_rows"] == 2
    assert man["preset"] == "tiny"


@pytest.mark.parametrize("args, message", [
    (["--set", "pe_rows=0"], "pe_rows must be in the range 1..64"),
    (["--set", "bogus=1"], "unknown configuration parameter 'bogus'"),
    (["--set", "pe_rows"], "expects key=value"),
    (["--set", "rlc=maybe"], "rlc must be a bool"),
    (["--top", "nope"], "unknown top 'nope'"),
])
def test_cli_bad_input_names_the_problem(tmp_path, args, message):
    res = CliRunner().invoke(main, ["verilog", "--preset", "tiny", "-o", str(tmp_path), *args])
    assert res.exit_code != 0
    assert message in res.output


def test_config_validation():
    with pytest.raises(ValueError, match="psum_width must be in the range 16"):
        AcceleratorConfig(psum_width=8)
    with pytest.raises(ValueError, match="glb_bank_words must be a power of two"):
        AcceleratorConfig(glb_bank_words=500)
    with pytest.raises(ValueError, match="zero_gating must be a bool"):
        AcceleratorConfig(zero_gating=1)
    with pytest.raises(ValueError, match="filter_lanes must be 1 or 4"):
        AcceleratorConfig(filter_lanes=2)
    with pytest.raises(ValueError, match="filter_lanes must be 1 or 2"):
        AcceleratorConfig(data_width=24, filter_lanes=4)
    assert AcceleratorConfig(data_width=24, filter_lanes=2).filter_lanes == 2
    with pytest.raises(ValueError, match="filter_spad_depth must be a multiple of filter_lanes=4"):
        AcceleratorConfig(filter_spad_depth=222)
    assert AcceleratorConfig(filter_spad_depth=222, filter_lanes=1).filter_lanes == 1
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        from hw.config import preset
        preset("huge")
    assert PRESETS["eyeriss"].glb_bytes == 108 * 1024
    assert PRESETS["eyeriss"].num_pes == 168
    assert "module pe" in convert(make_top(PRESETS["tiny"], "pe"), "pe")
