"""Output post-processing of the ofmap path: requantization and ReLU (DESIGN.md section 2).

Both units sit between the PE array's finished psums and the RLC encoder (DESIGN.md
section 5: "ReLU -> RLC encoder"); the numerics are the contract of DESIGN.md section 2,
checked against a Python rendering of that formula in ``sim_tests/test_postproc_hw.py``.
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.layouts import value_layout

__all__ = ["Requantize", "ReLU"]


def _check_width(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be in the range {lo}..{hi}, got {value!r}")


class Requantize(wiring.Component):
    """Scale an accumulator down to an output value (DESIGN.md section 2).

    ``y = saturate(round_half_up(acc >> output_shift))`` to signed ``data_width`` bits, where
    ``round_half_up(acc >> s) = (acc + 2**(s-1)) >> s`` for ``s > 0`` (arithmetic shift, i.e.
    floor) and ``acc`` for ``s = 0``. The sum is formed one bit wider than ``acc``, so it
    cannot overflow.

    Parameters
    ----------
    psum_width : int
        Bits of the accumulator, 2..64.
    data_width : int
        Bits of the output value, 2..64.

    Ports
    -----
    i : In(stream.Signature(value_layout(psum_width)))
        Accumulators (``data``: signed ``psum_width`` bits) with the plane's ``last`` flag.
    o : Out(stream.Signature(value_layout(data_width)))
        Requantized values; ``last`` passes through.
    output_shift : In(range(psum_width))
        Right shift ``s`` (bits). Must stay constant while a layer is being processed.

    Timing
    ------
    Latency 1 cycle (registered output), throughput 1 value per cycle;
    ``i.ready = ~o.valid | o.ready``.

    Errors
    ------
    ``ValueError`` at construction if a width is out of range.
    """

    def __init__(self, psum_width=32, data_width=16):
        _check_width("psum_width", psum_width, 2, 64)
        _check_width("data_width", data_width, 2, 64)
        self._psum_width = psum_width
        self._data_width = data_width
        super().__init__({
            "i": In(stream.Signature(value_layout(psum_width))),
            "o": Out(stream.Signature(value_layout(data_width))),
            "output_shift": In(range(psum_width)),
        })

    def elaborate(self, platform):
        m = Module()
        pw, dw = self._psum_width, self._data_width

        acc = self.i.payload.data
        rounded = Signal(signed(pw + 1))
        shifted = Signal(signed(pw + 1))
        y = Signal(signed(dw))
        y_max = (1 << (dw - 1)) - 1
        y_min = -(1 << (dw - 1))

        m.d.comb += [
            # 2**(s-1) for s > 0, 0 for s = 0; acc + 2**(s-1) <= 2**(pw-1) - 1 + 2**(pw-2)
            # fits in pw + 1 signed bits.
            rounded.eq(acc + ((1 << self.output_shift) >> 1)),
            shifted.eq(rounded >> self.output_shift),
        ]
        with m.If(shifted > y_max):
            m.d.comb += y.eq(y_max)
        with m.Elif(shifted < y_min):
            m.d.comb += y.eq(y_min)
        with m.Else():
            m.d.comb += y.eq(shifted)

        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                self.o.payload.data.eq(y),
                self.o.payload.last.eq(self.i.payload.last),
                self.o.valid.eq(1),
            ]
        return m


class ReLU(wiring.Component):
    """Optional rectifier after saturation: ``y = max(y, 0)`` (DESIGN.md section 2).

    Parameters
    ----------
    data_width : int
        Bits of a value, 2..64.

    Ports
    -----
    i : In(stream.Signature(value_layout(data_width)))
    o : Out(stream.Signature(value_layout(data_width)))
        ``last`` passes through.
    enable : In(1)
        1: rectify; 0: pass values through unchanged. Must stay constant while a layer is
        being processed.

    Timing
    ------
    Latency 1 cycle (registered output), throughput 1 value per cycle;
    ``i.ready = ~o.valid | o.ready``.

    Errors
    ------
    ``ValueError`` at construction if ``data_width`` is out of range.
    """

    def __init__(self, data_width=16):
        _check_width("data_width", data_width, 2, 64)
        self._data_width = data_width
        super().__init__({
            "i": In(stream.Signature(value_layout(data_width))),
            "o": Out(stream.Signature(value_layout(data_width))),
            "enable": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        x = self.i.payload.data
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                self.o.payload.data.eq(Mux(self.enable & (x < 0), 0, x)),
                self.o.payload.last.eq(self.i.payload.last),
                self.o.valid.eq(1),
            ]
        return m
