"""Global buffer (GLB): banked on-chip SRAM between DRAM and the PE array.

Eyeriss (Chen et al., IEEE JSSC 52(1), 2017, section IV) has a 108 KB global buffer made of
27 banks; the driver gives the ifmap, filter and psum regions of a layer their own banks so
that the streams feeding the GIN and draining the GON do not conflict. Here the GLB has
``config.glb_banks`` banks of ``config.glb_bank_words`` 64-bit words (DESIGN.md section 4).

Address map
-----------
Word address ``a`` (``0 <= a < glb_banks * glb_bank_words``) lives in bank
``a // glb_bank_words`` at index ``a % glb_bank_words``: banks are contiguous address
ranges. ``glb_bank_words`` is a power of two, so bank and index are bit slices of the
address; ``glb_banks`` need not be a power of two.
"""

from __future__ import annotations

from amaranth import Module, Signal, Const
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.layouts import GRANULE_BITS

__all__ = ["GLB_WORD_BITS", "GLB_MASK_BITS", "glb_addr_width", "glb_read_signature",
           "glb_write_layout", "GlobalBuffer"]

#: Bits per GLB word (one RLC word, one DRAM beat; DESIGN.md sections 3 and 4).
GLB_WORD_BITS = 64

# Entries of the per-read-port response buffer. Two entries let a port sustain one read per
# cycle with no combinational path from ``resp.ready`` to ``req.ready`` (see GlobalBuffer).
_RESP_BUFFER_DEPTH = 2


def glb_addr_width(config: AcceleratorConfig) -> int:
    """Bits of a word address that covers the whole GLB: ``ceil(log2(glb_words))``, at least
    1."""
    return max(1, (config.glb_words - 1).bit_length())


def glb_read_signature(addr_width: int) -> wiring.Signature:
    """Signature of one GLB read port, from the requester's side (as ``stream.Signature`` is
    from the source's side).

    Members: ``req: Out(stream.Signature(addr_width))`` (word address) and
    ``resp: In(stream.Signature(64))`` (the word). A requester declares
    ``Out(glb_read_signature(aw))``; the GLB declares ``In(...)``, and
    ``wiring.connect(m, requester.glb_rd, glb.rd[i])`` joins them.
    """
    return wiring.Signature({
        "req": Out(stream.Signature(addr_width)),
        "resp": In(stream.Signature(GLB_WORD_BITS)),
    })


#: Enable bits of a GLB write: one per ``GRANULE_BITS``-bit granule of the word.
GLB_MASK_BITS = GLB_WORD_BITS // GRANULE_BITS


def glb_write_layout(addr_width: int) -> data.StructLayout:
    """Payload of a GLB write port: ``addr`` (``addr_width`` bits, word address), ``data``
    (64 bits) and ``mask`` (``GLB_MASK_BITS`` = 64 // ``GRANULE_BITS`` = 4 bits).

    Bit ``g`` of ``mask`` enables data bits ``[16g + 15 : 16g]``; granules whose bit is 0
    keep their old contents. A whole-word write uses ``mask = 0xF``; a write with
    ``mask = 0`` is accepted (and arbitrated, and range-checked) but changes nothing."""
    return data.StructLayout({"addr": addr_width, "data": GLB_WORD_BITS,
                              "mask": GLB_MASK_BITS})


class GlobalBuffer(wiring.Component):
    """Banked global buffer with stream read and write ports (Eyeriss JSSC section IV).

    Parameters
    ----------
    config : AcceleratorConfig
        Uses ``glb_banks`` and ``glb_bank_words``.
    read_ports, write_ports : int
        Number of independent read and write ports (at least 1 each).
    addr_width : int or None
        Bits of the word addresses on the ports. Default :func:`glb_addr_width` (just
        enough for the GLB). A wider address (e.g. a controller's 16- or 32-bit field) is
        allowed; every address ``>= glb_words`` is out of range (see ``error``).
    init : sequence of int or None
        Initial contents, word ``i`` at address ``i`` (at most ``glb_words`` words, each
        0 <= w < 2**64; missing words are 0). Memory initial values: used by simulation and
        by FPGA block-RAM init.

    Ports
    -----
    rd : In(glb_read_signature(addr_width)).array(read_ports)
        ``rd[i].req`` (in): stream of word addresses, ``addr_width`` bits.
        ``rd[i].resp`` (out): stream of 64-bit words, in request order per port.
    wr : In(stream.Signature(glb_write_layout(addr_width))).array(write_ports)
        Stream of ``{addr, data, mask}`` writes; ``mask`` bit ``g`` enables the 16-bit
        granule ``g`` (data bits ``[16g + 15 : 16g]``), see :func:`glb_write_layout`.
    error : Out(1)
        Sticky: set the cycle after a read or write request with an out-of-range address
        (``addr >= glb_words``) is accepted. Such a write is dropped; such a read is
        answered, in order, with the word 0. Never wraps onto valid data. Cleared by reset
        or by ``error_clear``.
    error_clear : In(1)
        Clears ``error`` (a new error in the same cycle wins).

    Timing
    ------
    Each bank is one ``Memory(shape=64, depth=glb_bank_words)`` with one synchronous read
    port and one write port with 16-bit write granularity (simple dual port with byte
    enables: an ECP5 DP16KD / a two-port SRAM macro with bit-group write enables).

    * Read latency: the word requested by the ``req`` handshake in cycle ``t`` is valid on
      ``resp`` in cycle ``t + 1`` (bypassing the response buffer when it is empty). A port
      whose bank is free and whose consumer is ready sustains one read per cycle.
    * Each read port has a 2-entry response buffer; ``req.ready`` is 0 while the buffer
      plus the read in flight hold 2 words, so ``resp.ready`` low never loses data.
      ``req.ready`` depends combinationally on the ``valid``/``payload`` of the request
      streams (arbitration), never on ``resp.ready``.
    * Writes: the write accepted in cycle ``t`` is in the SRAM from cycle ``t + 1``; a port
      without conflicts sustains one write per cycle.
    * Read-during-write: a read and a write to the same address accepted in the same cycle
      return the OLD word (non-transparent read port; Yosys maps it onto a simple
      dual-port block RAM). A read accepted in a later cycle returns the new word.

    Conflicts
    ---------
    Each bank serves one read and one write per cycle (a read and a write to the same bank
    both proceed). When several read ports address the same bank in the same cycle, a
    per-bank round-robin arbiter grants one (the port granted last has the lowest priority
    next time, so no port starves); the others keep ``valid`` and see ``ready=0``. Write
    ports are arbitrated the same way, per bank. A read port whose response buffer is full
    does not take part in arbitration, so it never blocks another port.
    """

    def __init__(self, config: AcceleratorConfig, *, read_ports: int = 2, write_ports: int = 2,
                 addr_width: int | None = None, init=None):
        if read_ports < 1 or write_ports < 1:
            raise ValueError(f"read_ports and write_ports must be >= 1, got "
                             f"{read_ports} and {write_ports}")
        min_width = glb_addr_width(config)
        if addr_width is None:
            addr_width = min_width
        if addr_width < min_width:
            raise ValueError(f"addr_width must be at least {min_width} for a GLB of "
                             f"{config.glb_words} words, got {addr_width}")
        init = list(init) if init is not None else []
        if len(init) > config.glb_words:
            raise ValueError(f"init has {len(init)} words, the GLB holds {config.glb_words}")
        for i, w in enumerate(init):
            if not 0 <= w < (1 << GLB_WORD_BITS):
                raise ValueError(f"init[{i}] = {w} is not an unsigned 64-bit word")

        self.config = config
        self.read_ports = read_ports
        self.write_ports = write_ports
        self.addr_width = addr_width
        self.index_width = config.glb_bank_words.bit_length() - 1
        self.num_banks = config.glb_banks
        self.bank_words = config.glb_bank_words
        self.num_words = config.glb_words
        self._init = init
        super().__init__({
            "rd": In(glb_read_signature(addr_width)).array(read_ports),
            "wr": In(stream.Signature(glb_write_layout(addr_width))).array(write_ports),
            "error": Out(1),
            "error_clear": In(1),
        })

    # -- helpers ---------------------------------------------------------------------------
    def _decode(self, m, name, addr):
        """(bank, index, out_of_range) signals for ``addr``."""
        bank = Signal(max(1, self.addr_width - self.index_width), name=f"{name}_bank")
        index = Signal(self.index_width, name=f"{name}_index")
        oor = Signal(name=f"{name}_oor")
        m.d.comb += [
            index.eq(addr[:self.index_width]),
            bank.eq(addr[self.index_width:]),
            oor.eq(addr >= self.num_words),
        ]
        return bank, index, oor

    @staticmethod
    def _round_robin(m, name, requests):
        """One-hot grant among ``requests`` (list of 1-bit signals); the pointer names the
        highest-priority port and moves past the granted one."""
        n = len(requests)
        grants = [Signal(name=f"{name}_grant{i}") for i in range(n)]
        if n == 1:
            m.d.comb += grants[0].eq(requests[0])
            return grants
        ptr = Signal(range(n), name=f"{name}_ptr")
        with m.Switch(ptr):
            for k in range(n):
                with m.Case(k):
                    order = [(k + j) % n for j in range(n)]
                    for pos, i in enumerate(order):
                        higher = [requests[h] for h in order[:pos]]
                        blocked = Const(0)
                        for h in higher:
                            blocked = blocked | h
                        m.d.comb += grants[i].eq(requests[i] & ~blocked)
        for i in range(n):
            with m.If(grants[i]):
                m.d.sync += ptr.eq((i + 1) % n)
        return grants

    # -- elaboration -----------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        nb, bw = self.num_banks, self.bank_words

        rports, wports = [], []
        for b in range(nb):
            mem = Memory(shape=GLB_WORD_BITS, depth=bw, init=self._init[b * bw:(b + 1) * bw])
            m.submodules[f"bank{b}"] = mem
            # Non-transparent: read-during-write to one address returns the old word.
            rports.append(mem.read_port(domain="sync", transparent_for=()))
            # Per-granule write enables (``en`` is GLB_MASK_BITS wide).
            wports.append(mem.write_port(granularity=GRANULE_BITS))

        error_set = Signal()

        # -- read ports ------------------------------------------------------------------
        rd_dec, can_accept, fifos = [], [], []
        s1_valid, s1_bank, s1_oor = [], [], []
        for p, port in enumerate(self.rd):
            rd_dec.append(self._decode(m, f"rd{p}", port.req.payload))
            fifo = SyncFIFO(width=GLB_WORD_BITS, depth=_RESP_BUFFER_DEPTH)
            m.submodules[f"rd{p}_resp_buf"] = fifo
            fifos.append(fifo)
            s1_valid.append(Signal(name=f"rd{p}_s1_valid"))
            s1_bank.append(Signal(max(1, self.addr_width - self.index_width),
                                  name=f"rd{p}_s1_bank"))
            s1_oor.append(Signal(name=f"rd{p}_s1_oor"))
            ok = Signal(name=f"rd{p}_can_accept")
            m.d.comb += ok.eq(fifo.level + s1_valid[p] < _RESP_BUFFER_DEPTH)
            can_accept.append(ok)

        rd_granted = [Const(0)] * self.read_ports
        for b in range(nb):
            reqs = []
            for p, port in enumerate(self.rd):
                bank, _, oor = rd_dec[p]
                r = Signal(name=f"bank{b}_rd_req{p}")
                m.d.comb += r.eq(port.req.valid & can_accept[p] & ~oor & (bank == b))
                reqs.append(r)
            grants = self._round_robin(m, f"bank{b}_rd", reqs)
            rp = rports[b]
            m.d.comb += rp.en.eq(0)
            for p, g in enumerate(grants):
                with m.If(g):
                    m.d.comb += [rp.addr.eq(rd_dec[p][1]), rp.en.eq(1)]
            for p, g in enumerate(grants):
                rd_granted[p] = rd_granted[p] | g

        for p, port in enumerate(self.rd):
            bank, _, oor = rd_dec[p]
            fifo = fifos[p]
            accept = Signal(name=f"rd{p}_accept")
            # An out-of-range read needs no bank: it takes a buffer slot and returns 0.
            m.d.comb += [
                port.req.ready.eq(rd_granted[p] | (oor & can_accept[p])),
                accept.eq(port.req.valid & port.req.ready),
            ]
            m.d.sync += [
                s1_valid[p].eq(accept),
                s1_bank[p].eq(bank),
                s1_oor[p].eq(oor),
            ]
            with m.If(accept & oor):
                m.d.comb += error_set.eq(1)

            # Stage 1: the word read last cycle, from the bank named by s1_bank.
            s1_data = Signal(GLB_WORD_BITS, name=f"rd{p}_s1_data")
            with m.Switch(s1_bank[p]):
                for b in range(nb):
                    with m.Case(b):
                        m.d.comb += s1_data.eq(rports[b].data)
            with m.If(s1_oor[p]):
                m.d.comb += s1_data.eq(0)

            # Response: buffer head if any, else bypass the stage-1 word.
            with m.If(fifo.r_rdy):
                m.d.comb += [port.resp.valid.eq(1), port.resp.payload.eq(fifo.r_data)]
            with m.Else():
                m.d.comb += [port.resp.valid.eq(s1_valid[p]), port.resp.payload.eq(s1_data)]
            bypass = ~fifo.r_rdy & port.resp.ready
            m.d.comb += [
                fifo.r_en.eq(port.resp.ready),
                fifo.w_data.eq(s1_data),
                fifo.w_en.eq(s1_valid[p] & ~bypass),
            ]

        # -- write ports -----------------------------------------------------------------
        wr_dec = [self._decode(m, f"wr{p}", port.payload.addr) for p, port in enumerate(self.wr)]
        wr_granted = [Const(0)] * self.write_ports
        for b in range(nb):
            reqs = []
            for p, port in enumerate(self.wr):
                bank, _, oor = wr_dec[p]
                r = Signal(name=f"bank{b}_wr_req{p}")
                m.d.comb += r.eq(port.valid & ~oor & (bank == b))
                reqs.append(r)
            grants = self._round_robin(m, f"bank{b}_wr", reqs)
            wp = wports[b]
            m.d.comb += wp.en.eq(0)
            for p, g in enumerate(grants):
                with m.If(g):
                    m.d.comb += [wp.addr.eq(wr_dec[p][1]), wp.data.eq(self.wr[p].payload.data),
                                 wp.en.eq(self.wr[p].payload.mask)]
            for p, g in enumerate(grants):
                wr_granted[p] = wr_granted[p] | g

        for p, port in enumerate(self.wr):
            _, _, oor = wr_dec[p]
            # An out-of-range write is accepted and dropped.
            m.d.comb += port.ready.eq(wr_granted[p] | oor)
            with m.If(port.valid & oor):
                m.d.comb += error_set.eq(1)

        # -- sticky error ------------------------------------------------------------------
        with m.If(error_set):
            m.d.sync += self.error.eq(1)
        with m.Elif(self.error_clear):
            m.d.sync += self.error.eq(0)

        return m
