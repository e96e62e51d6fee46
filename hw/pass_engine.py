"""PASS engine: one load-compute-store round of the PE array (Eyeriss JSSC section IV).

The engine owns the PE array and the four streams around it. Each stream is an address
generator (``hw.agu.AGU``) walking the GLB in the order the driver chose:

- filter GIN:  AGU -> ElementReader (act elements, or whole GLB words of ``filter_lanes``
               values) -> ``array.filter_gin`` (tag = filter row)
- ifmap GIN:   AGU -> ElementReader (zero padding)  -> ``array.ifmap_gin`` (tag = diagonal)
- psum GIN:    AGU -> ElementReader (psum elements, or whole GLB words of ``psum_lanes``
               psums) -> ``array.psum_gin``  (tag = chain head, or a group of heads)
- GON:         AGU -> tag to ``array.gon_sel`` (which chain tail, or group of tails) and
               address to the ElementWriter, which joins it with ``array.gon`` and writes
               the GLB (one psum element, or one whole word of ``psum_lanes`` psums).

Starting the engine starts every active PE and the AGUs together; it is busy until every PE
is idle and the last psum has been written to the GLB.
"""

from __future__ import annotations

from amaranth import Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .agu import AGU, ElementReader, ElementWriter
from .array import PEArray, psum_link_shape
from .config import AcceleratorConfig
from .glb import glb_read_signature, glb_write_layout
from .layouts import (act_bits, agu_step_layout, pass_desc_layout, pe_role_layout,
                      psum_bits)
from .pe import PEConfig, filter_in_shape

__all__ = ["PassEngine"]


class PassEngine(wiring.Component):
    """PE array plus its GIN/GON feeders, driven by a ``pass_desc_layout`` descriptor.

    Ports
    -----
    desc : In(pass_desc_layout())
        Latched on ``start`` (the controller does not change it while ``busy``).
    start : In(1), busy : Out(1)
    role_wr : In(stream.Signature(pe_role_layout()))
        PE roles (forwarded to the array; accepted only while idle).
    filter_rd, ifmap_rd, psum_rd : Out(glb_read_signature(glb_addr_width))
    psum_wr : Out(stream.Signature(glb_write_layout(glb_addr_width)))
    mac_count, gated_count : Out
        MACs fired / gated this cycle, summed over the array.
    stall : Out(1)
        The array is busy and no PE fired or skipped a MAC this cycle.
    role_error : Out(1)
        A role word named a PE that does not exist (sticky, from the array).
    """

    def __init__(self, config: AcceleratorConfig, glb_addr_width: int):
        self._config = config
        self._aw = glb_addr_width
        self._array = PEArray(config)
        aw = glb_addr_width
        super().__init__({
            "desc": In(pass_desc_layout()),
            "start": In(1),
            "busy": Out(1),
            "role_wr": In(stream.Signature(pe_role_layout())),
            "filter_rd": Out(glb_read_signature(aw)),
            "ifmap_rd": Out(glb_read_signature(aw)),
            "psum_rd": Out(glb_read_signature(aw)),
            "psum_wr": Out(stream.Signature(glb_write_layout(aw))),
            "mac_count": Out(self._array.mac_count.shape()),
            "gated_count": Out(self._array.gated_count.shape()),
            "stall": Out(1),
            "role_error": Out(1),
            "role_error_clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        aw = self._aw
        dw, pw = cfg.data_width, cfg.psum_width
        m.submodules.array = array = self._array

        desc = Signal(pass_desc_layout())
        running = Signal()
        launch = Signal()
        m.d.comb += launch.eq(self.start & ~running)
        with m.If(launch):
            m.d.sync += desc.eq(self.desc)

        wiring.connect(m, wiring.flipped(self.role_wr), array.role_wr)
        m.d.comb += [self.mac_count.eq(array.mac_count),
                     self.gated_count.eq(array.gated_count),
                     self.stall.eq(array.stall),
                     self.role_error.eq(array.role_error),
                     array.role_error_clear.eq(self.role_error_clear)]

        # PE run configuration: the descriptor (latched now) goes to every active PE.
        pe_cfg = Signal(PEConfig(cfg))
        d = self.desc
        m.d.comb += [pe_cfg.p.eq(d.p), pe_cfg.q.eq(d.q), pe_cfg.S.eq(d.S), pe_cfg.U.eq(d.U),
                     pe_cfg.F.eq(d.F), pe_cfg.n_rows.eq(d.n_rows),
                     pe_cfg.product_shift.eq(d.product_shift),
                     pe_cfg.load_filter.eq(d.load_filter), pe_cfg.psum_in_en.eq(d.psum_in_en)]
        m.d.comb += [array.cfg.eq(pe_cfg), array.start.eq(launch)]

        # Address generators (started with the array; unused streams are not started).
        agus = {}
        for name in ("filter", "ifmap", "psum_in", "psum_out"):
            agus[name] = agu = AGU(pad_check=(name == "ifmap"))   # only the ifmap walk pads
            m.submodules[f"agu_{name}"] = agu
            m.d.comb += agu.desc.eq(getattr(self.desc, name))
        m.d.comb += [agus["filter"].start.eq(launch & d.load_filter),
                     agus["ifmap"].start.eq(launch),
                     agus["psum_in"].start.eq(launch & d.psum_in_en),
                     agus["psum_out"].start.eq(launch)]

        # GIN feeders: GLB element reads, then (data, tag) to the array.
        # With filter lanes the filter walk steps over whole GLB words (64-bit elements).
        fbits = act_bits(dw) if cfg.filter_lanes == 1 else 64
        # With psum lanes both psum walks step over whole GLB words (64-bit elements).
        pbits = psum_bits(pw) if cfg.psum_lanes == 1 else 64
        pshape = psum_link_shape(cfg)
        feeders = (("filter", fbits, filter_in_shape(cfg), self.filter_rd, array.filter_gin),
                   ("ifmap", act_bits(dw), signed(dw), self.ifmap_rd, array.ifmap_gin),
                   ("psum_in", pbits, pshape, self.psum_rd, array.psum_gin))
        readers = []
        for name, bits, shape, glb_port, gin in feeders:
            rd = ElementReader(bits, shape, aw)
            m.submodules[f"rd_{name}"] = rd
            readers.append(rd)
            wiring.connect(m, agus[name].o, rd.i)
            wiring.connect(m, rd.glb, wiring.flipped(glb_port))
            m.d.comb += [gin.valid.eq(rd.o.valid), gin.payload.data.eq(rd.o.payload.data),
                         gin.payload.tag.eq(rd.o.payload.tag), rd.o.ready.eq(gin.ready)]

        # GON: each psum_out step names the chain tail to collect from (tag) and where the
        # psum goes (addr). The step is forked to gon_sel and to the writer's address FIFO.
        m.submodules.wr_psum = wr = ElementWriter(pbits, pshape, aw)
        m.submodules.step_fifo = step_fifo = SyncFIFOBuffered(
            width=agu_step_layout().size, depth=8)
        po = agus["psum_out"].o
        m.d.comb += [
            array.gon_sel.payload.eq(po.payload.tag),
            array.gon_sel.valid.eq(po.valid & step_fifo.w_rdy),
            step_fifo.w_data.eq(po.payload),
            step_fifo.w_en.eq(po.valid & array.gon_sel.ready & step_fifo.w_rdy),
            po.ready.eq(array.gon_sel.ready & step_fifo.w_rdy),
            wr.addr_i.payload.eq(step_fifo.r_data),
            wr.addr_i.valid.eq(step_fifo.r_rdy),
            step_fifo.r_en.eq(wr.addr_i.ready),
        ]
        wiring.connect(m, array.gon, wr.data_i)
        wiring.connect(m, wr.glb, wiring.flipped(self.psum_wr))

        # Busy until everything launched has drained.
        pending = Signal()
        m.d.comb += pending.eq(array.busy | step_fifo.r_rdy | array.gon.valid | wr.glb.valid
                               | agus["filter"].busy | agus["ifmap"].busy
                               | agus["psum_in"].busy | agus["psum_out"].busy
                               | readers[0].busy | readers[1].busy | readers[2].busy)
        with m.If(launch):
            m.d.sync += running.eq(1)
        with m.Elif(running & ~pending):
            m.d.sync += running.eq(0)
        m.d.comb += self.busy.eq(running)
        return m
