"""A stream register slice (2-entry skid buffer).

Cuts every combinational path through a stream: ``o.valid``/``o.payload`` are flops and
``i.ready`` is a flop, so neither the producer's ``valid``/``payload`` logic nor the
consumer's ``ready`` logic is on a path through the slice. One transfer per cycle is
sustained; the latency is one cycle. Used where a stream crosses a long distance on an FPGA
(the ECP5 board core's DRAM ports, README's FPGA section).
"""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    """Registered stream slice.

    Parameters
    ----------
    shape : shape-castable
        Payload shape of both streams.

    Ports
    -----
    i : In(stream.Signature(shape))
        ``i.ready`` is high iff the skid entry is empty (a flop).
    o : Out(stream.Signature(shape))
        Registered: ``o.valid`` and ``o.payload`` do not depend on ``o.ready`` or ``i``.

    Words leave in arrival order; none is dropped or duplicated under any ``o.ready``
    pattern. Latency 1 cycle (a word accepted at cycle ``t`` is on ``o`` at ``t + 1``).
    """

    def __init__(self, shape):
        self._shape = shape
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
        })

    def elaborate(self, platform):
        m = Module()
        sk_valid = Signal()
        sk_payload = Signal(self._shape)
        accept = Signal()
        m.d.comb += [self.i.ready.eq(~sk_valid), accept.eq(self.i.valid & ~sk_valid)]
        with m.If(~self.o.valid | self.o.ready):
            with m.If(sk_valid):
                m.d.sync += [self.o.payload.eq(sk_payload), self.o.valid.eq(1),
                             sk_valid.eq(0)]
            with m.Elif(accept):
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(1)]
            with m.Else():
                m.d.sync += self.o.valid.eq(0)
        with m.Elif(accept):
            m.d.sync += [sk_payload.eq(self.i.payload), sk_valid.eq(1)]
        return m
