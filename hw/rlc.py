"""Run-length coding (RLC) of activation planes, Eyeriss JSSC section IV-B.

The word format is the contract of DESIGN.md section 3 (constants in :mod:`hw.layouts`):
(run, level) pairs of 5 + 16 bits, three pairs per 64-bit word, least significant pair
first, bit 63 set on the last word of a plane, the last word padded with all-zero pairs.
The software reference is ``sw_driver.golden.rlc_encode`` / ``rlc_decode``; the tests in
``sim_tests/test_rlc_hw.py`` check these units against it word for word.
"""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.layouts import (RLC_LAST_BIT, RLC_LEVEL_BITS, RLC_MAX_RUN, RLC_PAIR_BITS,
                        RLC_PAIRS_PER_WORD, RLC_RUN_BITS, RLC_WORD_BITS, value_layout)

__all__ = ["RLCEncoder", "RLCDecoder", "RLC_COUNT_BITS"]

#: Bits of the decoder's plane element count (planes of up to 2**24 - 1 values).
RLC_COUNT_BITS = 24


def _check_data_width(data_width):
    if isinstance(data_width, bool) or not isinstance(data_width, int) \
            or not 1 <= data_width <= RLC_LEVEL_BITS:
        raise ValueError(f"data_width must be in the range 1..{RLC_LEVEL_BITS} (the RLC level "
                         f"is {RLC_LEVEL_BITS} bits, DESIGN.md section 3), got {data_width!r}")


class RLCEncoder(wiring.Component):
    """Encode a stream of activation planes into RLC words (DESIGN.md section 3).

    Parameters
    ----------
    data_width : int
        Bits of an input value, 1..16 (values are sign-extended to the 16-bit level).

    Ports
    -----
    i : In(stream.Signature(value_layout(data_width)))
        Values of a plane, row-major; ``last`` marks the plane's final value. The next
        plane may start on the cycle after ``last``.
    o : Out(stream.Signature(64))
        RLC words; bit 63 is set on the last word of each plane.

    Timing
    ------
    Throughput 1 input value per cycle while ``o`` is not stalled (an input value makes at
    most one pair, three pairs make a word, so the output needs at most one word per cycle).
    The output is registered: a word appears on ``o`` one cycle after the value that
    completes it is accepted. ``i.ready = ~o.valid | o.ready``.

    Encoding
    --------
    Greedy and therefore unique (DESIGN.md section 3). Streaming form used here, with a
    zero counter ``z`` (0..31): a non-zero value emits ``(z, v)``; the 32nd zero in a row
    emits ``(31, 0)``; a plane's final value emits ``(z, v)`` whatever ``v`` is (for a zero
    this is the closing ``(min(zeros - 1, 31), 0)`` pair); any emission resets ``z``.
    This is identical to the batch description: each run of 32 zeros becomes one
    ``(31, 0)``, and ``z`` trailing zeros close with ``(z - 1, 0)``.

    Errors
    ------
    ``ValueError`` at construction if ``data_width`` is out of range. A plane must have at
    least one value (an empty plane has no ``last`` to end it; it encodes to no words).
    """

    def __init__(self, data_width=16):
        _check_data_width(data_width)
        self._data_width = data_width
        super().__init__({
            "i": In(stream.Signature(value_layout(data_width))),
            "o": Out(stream.Signature(RLC_WORD_BITS)),
        })

    @property
    def data_width(self):
        return self._data_width

    def elaborate(self, platform):
        m = Module()

        zeros = Signal(RLC_RUN_BITS)                 # zeros seen since the last pair
        slot = Signal(range(RLC_PAIRS_PER_WORD))     # next free pair slot in the word
        held = Signal(RLC_PAIR_BITS * (RLC_PAIRS_PER_WORD - 1))  # completed pairs 0..1

        level = Signal(signed(RLC_LEVEL_BITS))
        pair = Signal(RLC_PAIR_BITS)
        word = Signal(RLC_WORD_BITS)
        emit = Signal()
        flush = Signal()
        take = Signal()

        m.d.comb += [
            level.eq(self.i.payload.data),
            pair.eq(Cat(zeros, level)),
            emit.eq(self.i.payload.last | (self.i.payload.data != 0)
                    | (zeros == RLC_MAX_RUN)),
            flush.eq(emit & (self.i.payload.last | (slot == RLC_PAIRS_PER_WORD - 1))),
            self.i.ready.eq(~self.o.valid | self.o.ready),
            take.eq(self.i.valid & self.i.ready),
        ]

        # The word that the current pair completes (slots above it padded with zero pairs).
        with m.Switch(slot):
            for k in range(RLC_PAIRS_PER_WORD):
                with m.Case(k):
                    m.d.comb += word.eq(held[:RLC_PAIR_BITS * k]
                                        | (pair << (RLC_PAIR_BITS * k))
                                        | (self.i.payload.last << RLC_LAST_BIT))

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.If(take):
            with m.If(emit):
                m.d.sync += zeros.eq(0)
                with m.If(flush):
                    m.d.sync += [
                        self.o.payload.eq(word),
                        self.o.valid.eq(1),
                        slot.eq(0),
                        held.eq(0),
                    ]
                with m.Else():
                    m.d.sync += [
                        held.eq(word[:len(held)]),
                        slot.eq(slot + 1),
                    ]
            with m.Else():
                m.d.sync += zeros.eq(zeros + 1)

        return m


class RLCDecoder(wiring.Component):
    """Decode RLC words into a stream of activation planes (DESIGN.md section 3).

    Parameters
    ----------
    data_width : int
        Bits of an output value, 1..16 (the 16-bit level is truncated to it).

    Ports
    -----
    count : In(stream.Signature(24))
        Number of values of the next plane; taken only while idle, before its words.
    i : In(stream.Signature(64))
        RLC words of the plane.
    o : Out(stream.Signature(value_layout(data_width)))
        Exactly ``count`` values; ``last`` on the final one.
    error : Out(1)
        Malformed stream seen (sticky); cleared when the next count is accepted.
    busy : Out(1)
        A plane is being decoded or its final value is still waiting on ``o``.

    Timing
    ------
    Throughput 1 output value per cycle while ``o`` is not stalled and words arrive in time
    (a pair ``(run, level)`` takes ``run + 1`` cycles; the next word is accepted in the
    cycle that the current word's last pair is emitted, so there is no bubble between
    words). Output is registered: the first value appears two cycles after the first word
    is offered (one to load the word, one for the output register). After the final value
    the decoder is idle again and takes the next count in the following cycle.

    Count 0 consumes no words and produces no values (``golden.rlc_encode`` of an empty plane
    is an empty word array).

    Errors (``error`` set, never a hang)
    ------------------------------------
    (a) The last word (bit 63) is exhausted before ``count`` values were produced: the
        value decoded from its final pair is emitted with ``last = 1`` (so downstream plane
        framing still closes), ``error`` is set and the decoder waits for the next count.
    (b) ``count`` is reached inside a word whose bit 63 is 0: the final value carries
        ``last = 1``, ``error`` is set, the rest of that word is dropped and no further words
        are consumed (they stay in ``i`` for whoever handles the error).
    Padding pairs after the final value of a proper last word are ignored, not errors.
    ``ValueError`` at construction if ``data_width`` is out of range.
    """

    def __init__(self, data_width=16):
        _check_data_width(data_width)
        self._data_width = data_width
        super().__init__({
            "count": In(stream.Signature(RLC_COUNT_BITS)),
            "i": In(stream.Signature(RLC_WORD_BITS)),
            "o": Out(stream.Signature(value_layout(data_width))),
            "error": Out(1),
            "busy": Out(1),
        })

    @property
    def data_width(self):
        return self._data_width

    def elaborate(self, platform):
        m = Module()

        running = Signal()                             # a plane is being decoded
        remaining = Signal(RLC_COUNT_BITS)             # values still to produce
        word = Signal(RLC_WORD_BITS)                   # current word
        word_valid = Signal()
        k = Signal(range(RLC_PAIRS_PER_WORD))          # current pair in the word
        zeros_done = Signal(RLC_RUN_BITS)              # zeros already emitted for pair k

        pair = Signal(RLC_PAIR_BITS)
        run = Signal(RLC_RUN_BITS)
        level = Signal(signed(RLC_LEVEL_BITS))
        value = Signal(signed(RLC_LEVEL_BITS))
        at_level = Signal()
        word_done = Signal()
        end_of_stream = Signal()
        final = Signal()
        fire = Signal()

        m.d.comb += [
            pair.eq(word[:RLC_PAIR_BITS * RLC_PAIRS_PER_WORD].word_select(k, RLC_PAIR_BITS)),
            run.eq(pair[:RLC_RUN_BITS]),
            level.eq(pair[RLC_RUN_BITS:]),
            at_level.eq(zeros_done == run),
            value.eq(Mux(at_level, level, 0)),
            word_done.eq(at_level & (k == RLC_PAIRS_PER_WORD - 1)),
            end_of_stream.eq(word_done & word[RLC_LAST_BIT]),
            final.eq(remaining == 1),
            fire.eq(running & word_valid & (~self.o.valid | self.o.ready)),
            self.i.ready.eq(running & (~word_valid
                                       | (fire & word_done & ~final & ~end_of_stream))),
            self.count.ready.eq(~running),
            self.busy.eq(running | self.o.valid),
        ]

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.If(fire):
            m.d.sync += [
                self.o.payload.data.eq(value[:self._data_width]),
                self.o.payload.last.eq(final | end_of_stream),
                self.o.valid.eq(1),
                remaining.eq(remaining - 1),
            ]
            with m.If(final | end_of_stream):
                m.d.sync += [running.eq(0), word_valid.eq(0)]
                # (a): stream ended early; (b): count reached in a word that is not last.
                with m.If(~final | ~word[RLC_LAST_BIT]):
                    m.d.sync += self.error.eq(1)
            with m.Elif(at_level):
                m.d.sync += zeros_done.eq(0)
                with m.If(word_done):
                    m.d.sync += [k.eq(0), word_valid.eq(0)]
                with m.Else():
                    m.d.sync += k.eq(k + 1)
            with m.Else():
                m.d.sync += zeros_done.eq(zeros_done + 1)

        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [word.eq(self.i.payload), word_valid.eq(1), k.eq(0), zeros_done.eq(0)]

        with m.If(self.count.valid & self.count.ready):
            m.d.sync += [
                remaining.eq(self.count.payload),
                running.eq(self.count.payload != 0),
                word_valid.eq(0),
                k.eq(0),
                zeros_done.eq(0),
                self.error.eq(0),
            ]

        return m
