"""``Accelerator``: run CNN layers and networks on a target with one API (DESIGN.md section 6).

    acc = Accelerator(preset("tiny"))
    y, stats = acc.conv2d(x, w, bias, stride=1, padding=1, product_shift=0, output_shift=8,
                          relu=True)

The layer is mapped (``sw_driver.mapper``), compiled to a DRAM image and a command list
(``sw_driver.compiler``), executed by the target, and its ofmap is read back from DRAM.
Networks run layer after layer in ONE command list, ofmaps kept RLC-compressed in DRAM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hw.config import AcceleratorConfig
from hw.layouts import ErrorCode, act_bits, lanes
from sw_driver.compiler import DramAllocator, PlaneStore, compile_strips, finish_program
from sw_driver.mapper import LayerShape, Mapping, map_layer
from sw_driver.strips import plan_network, strip_inputs
from sw_driver.targets import AcceleratorError, DramModel, PysimTarget, VerilatorTarget

__all__ = ["Accelerator", "ConvLayer", "LayerStats", "RunStats"]


@dataclass
class ConvLayer:
    """One CONV (or FC) layer of a network; shifts and ReLU per DESIGN.md section 2."""

    weights: np.ndarray
    bias: np.ndarray | None = None
    stride: int = 1
    padding: int = 0
    groups: int = 1
    product_shift: int = 0
    output_shift: int = 0
    relu: bool = False


@dataclass
class LayerStats:
    mapping: Mapping
    macs: int
    ofmap_words: int        # DRAM words of the stored ofmap (RLC or raw)
    ofmap_dense_words: int  # the same ofmap packed raw

    @property
    def rlc_ratio(self) -> float:
        """Dense size / stored size of the ofmap (> 1 means RLC saved traffic)."""
        return self.ofmap_dense_words / max(1, self.ofmap_words)


@dataclass
class RunStats:
    """Counters of one run (``hw.layouts.CSR_COUNTERS``) and derived figures."""

    cycles: int
    counters: dict
    macs: int
    num_pes: int
    wall_seconds: float
    layers: list = field(default_factory=list)

    @property
    def utilization(self) -> float:
        """Useful MACs / (cycles x PEs)."""
        return self.macs / max(1, self.cycles * self.num_pes)

    @property
    def cycles_per_second(self) -> float:
        """Simulated cycles per second of wall time."""
        return self.cycles / max(1e-9, self.wall_seconds)

    @property
    def rlc_ratio(self) -> float:
        dense = sum(l.ofmap_dense_words for l in self.layers)
        stored = sum(l.ofmap_words for l in self.layers)
        return dense / max(1, stored)


class Accelerator:
    """The generated accelerator on a target: ``"verilator"`` (cocotb + Verilator, built once
    per configuration), ``"pysim"`` (Amaranth's simulator; small presets only) or
    ``"serial"`` (an FPGA board over its UART bridge, ``sw_driver.serial.SerialTarget``,
    e.g. ``Accelerator(preset("fpga"), "serial", url="/dev/ttyUSB0")``). ``target_args``
    go to the target's constructor; the ``dram`` model is ignored on a board.

    Raises
    ------
    ValueError
        For an unknown target or a layer that cannot be mapped (before anything runs).
    AcceleratorError
        If the hardware reports an error or does not finish.
    """

    def __init__(self, config: AcceleratorConfig, target: str = "verilator", *,
                 dram: DramModel = DramModel(), buffers=(1, 2), **target_args):
        self.config = config
        self.dram_model = dram
        #: GLB buffering the mapper may choose: 1 = serial load/compute/store, 2 = double
        #: buffered, overlapped (``sw_driver.mapper.map_layer``).
        self.buffers = tuple(buffers)
        if target == "verilator":
            self.target = VerilatorTarget(config, **target_args)
        elif target == "pysim":
            self.target = PysimTarget(config, **target_args)
        elif target == "serial":
            from sw_driver.serial import SerialTarget
            self.target = SerialTarget(config, **target_args)
        else:
            raise ValueError(f"unknown target {target!r}; available: 'verilator', 'pysim', "
                             "'serial'")

    def map(self, x_shape, w_shape, *, stride=1, padding=0, groups=1) -> Mapping:
        N, C, H, W = x_shape
        M, Cg, R, S = w_shape
        if Cg * groups != C:
            raise ValueError(f"filter channels {Cg} x groups {groups} != ifmap channels {C}")
        return map_layer(LayerShape(N, C, H, W, M, R, S, stride, padding, groups), self.config,
                         dram_rate=self.dram_model.rate_num / self.dram_model.rate_den,
                         buffers=self.buffers)

    def conv2d(self, x, w, bias=None, *, stride=1, padding=0, groups=1, product_shift=0,
               output_shift=0, relu=False, ifmap_rlc=False, ofmap_rlc="auto", **run_args):
        """One CONV layer: returns ``(ofmap (N, M, E, F) int16, RunStats)``."""
        layer = ConvLayer(w, bias, stride, padding, groups, product_shift, output_shift, relu)
        outs, stats = self.run_network(x, [layer], ifmap_rlc=ifmap_rlc,
                                       ofmap_rlc=ofmap_rlc, **run_args)
        return outs[-1], stats

    def run_network(self, x, layers: list[ConvLayer], *, ifmap_rlc=False, ofmap_rlc="auto",
                    reset_at=0, max_cycles=200_000_000):
        """Run ``layers`` back to back in one command list. Returns the list of every layer's
        ofmap (each read back from DRAM) and the run's stats.

        The first layer's input is stored raw unless ``ifmap_rlc``. Ofmaps are
        RLC-compressed when ``ofmap_rlc`` is True, raw when False, and with ``"auto"`` RLC
        for layers with ReLU (whose ofmaps are sparse) and raw otherwise.

        A first layer whose ifmap plane does not fit the GLB runs as row strips
        (:mod:`sw_driver.strips`, e.g. AlexNet CONV1 on ``eyeriss``): its ofmap is the strips'
        rows joined, and ``stats.layers`` holds one entry per strip."""
        cfg = self.config
        x = np.asarray(x)
        self._check_input(x)
        dram = DramAllocator(base=16)
        plans = self.plan_network(x.shape, layers)
        commands, programs, layer_stats = [], [], []
        inputs = []
        for li, (layer, (padded, strips)) in enumerate(zip(layers, plans)):
            rlc = bool(layer.relu) if ofmap_rlc == "auto" else bool(ofmap_rlc)
            if li == 0:
                inputs = []
                for store, xs in strip_inputs(dram, x, layer, (padded, strips),
                                              rlc=ifmap_rlc, data_width=cfg.data_width):
                    dram.segments.append((store.base, store.encode(xs, cfg.data_width)))
                    inputs.append(store)
            outs = [PlaneStore.allocate(dram, L.N, L.M, L.E, L.F, rlc=rlc,
                                        data_width=cfg.data_width)
                    for L in (st.mapping.layer for st in strips)]
            for prog in compile_strips([st.mapping for st in strips], dram,
                                       weights=layer.weights, bias=layer.bias,
                                       ifmaps=inputs, ofmaps=outs,
                                       product_shift=layer.product_shift,
                                       output_shift=layer.output_shift, relu=layer.relu):
                commands += prog.commands
                programs.append(prog)
            inputs = [programs[-1].ofmap]
        cmd_addr = finish_program(dram, commands)
        readback = [(p.ofmap.base, p.ofmap.words) for p in programs]
        res = self.target.run(dram.segments, cmd_addr, readback, dram=self.dram_model,
                              max_cycles=max_cycles, reset_at=reset_at)
        if not res.finished:
            raise AcceleratorError(f"accelerator did not finish within {max_cycles} cycles",
                                   result=res)
        if res.error:
            raise AcceleratorError(f"accelerator error {ErrorCode(res.error).name}",
                                   code=ErrorCode(res.error), result=res)
        ys = []
        la = lanes(act_bits(cfg.data_width))
        for prog, words in zip(programs, res.regions):
            y = prog.ofmap.decode(words, cfg.data_width)
            ys.append(y)
            dense = PlaneStore(0, *y.shape, rlc=False,
                               slot_words=-(-y.shape[2] * y.shape[3] // la)).words
            stored = self._stored_words(prog.ofmap, words)
            layer_stats.append(LayerStats(prog.mapping, prog.mapping.layer.macs, stored, dense))
        outs, k = [], 0
        for _, strips in plans:
            outs.append(np.concatenate(ys[k:k + len(strips)], axis=2))
            k += len(strips)
        stats = RunStats(cycles=res.cycles, counters=res.counters,
                         macs=sum(p.mapping.layer.macs for p in programs), num_pes=cfg.num_pes,
                         wall_seconds=res.wall_run, layers=layer_stats)
        stats.reset_while_busy = res.reset_while_busy
        return outs, stats

    def plan_network(self, x_shape, layers: list[ConvLayer]) -> list[tuple[bool, list]]:
        """Per layer, ``(host_padded, strips)``: see :func:`sw_driver.strips.plan_network`."""
        return plan_network(self.config, x_shape, layers, buffers=self.buffers,
                            dram_rate=self.dram_model.rate_num / self.dram_model.rate_den)

    @staticmethod
    def _stored_words(store: PlaneStore, words) -> int:
        if not store.rlc:
            return store.words
        total = 0
        for k in range(store.N * store.C):
            slot = words[k * store.slot_words:(k + 1) * store.slot_words]
            last = np.nonzero(slot >> np.uint64(63))[0]
            total += int(last[0]) + 1 if len(last) else store.slot_words
        return total

    def _check_input(self, x):
        if x.ndim != 4:
            raise ValueError(f"ifmap must be 4-D (N, C, H, W), got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"ifmap must be an integer array, got {x.dtype}")
        lo, hi = -(1 << (self.config.data_width - 1)), (1 << (self.config.data_width - 1)) - 1
        if x.size and (x.min() < lo or x.max() > hi):
            raise ValueError(f"ifmap values must fit signed {self.config.data_width} bits")
