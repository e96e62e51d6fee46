"""Longest register-to-register paths of a placed (or routed) design, from nextpnr's SDF.

nextpnr prints its critical path only after routing; after placement it gives only an Fmax
estimate. Its SDF (``--sdf``, also written with ``--no-route``, then with its placement
delay estimates) holds every cell arc (``IOPATH``), every net arc (``INTERCONNECT``) and the
setup checks, which is enough for a longest-path search. This module finds the worst path
into each endpoint and lists the worst ones, one per pair of (start, end) module, so that
paths of a large design can be cut before spending an hour in the router. On the lock-step
8 x 8 board tops of session 15 its worst path equalled nextpnr's estimate (29.74 ns against
33.62 MHz).

Usage::

    nextpnr-ecp5 ... --no-route --sdf placed.sdf
    python -m fpga.sdf_paths placed.sdf [-n 40] [-v]

Limitations: one clock (every ``IOPATH`` from a port named ``CLK*`` or a setup check's
clock starts a path), rise and fall delays are merged (the larger one), nets from nextpnr's
constant drivers (``$PACKER_GND``/``$PACKER_VCC``) start no path, and combinational loops
are cut where the search meets them.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from dataclasses import dataclass

__all__ = ["Path", "parse_sdf", "longest_paths", "main"]

_TOKEN = re.compile(r'\(|\)|"(?:[^"\\]|\\.)*"|[^\s()]+')


@dataclass
class Path:
    """One path: ``delay`` in ns (arrival + setup) and its cells, start first, each with its
    arrival time in ns."""
    delay: float
    start: str
    end: str
    cells: list[tuple[str, float]]


def _tree(text: str) -> list:
    stack: list[list] = [[]]
    for tok in _TOKEN.findall(text):
        if tok == "(":
            stack.append([])
        elif tok == ")":
            if len(stack) == 1:
                raise ValueError("SDF: unbalanced ')'")
            inner = stack.pop()
            stack[-1].append(inner)
        else:
            stack[-1].append(tok)
    if len(stack) != 1:
        raise ValueError("SDF: unbalanced '(' (truncated file?)")
    return stack[0]


def _delay(items) -> float:
    """Largest number in triples like ``(1:2:3)`` (ps)."""
    best = 0.0
    for item in items:
        if isinstance(item, list):
            for s in item:
                for part in str(s).split(":"):
                    try:
                        best = max(best, float(part))
                    except ValueError:
                        pass
    return best


def _port(p) -> str:
    return p[-1] if isinstance(p, list) else p      # (posedge CLK) -> CLK


def parse_sdf(text: str):
    """Returns ``(cell_arcs, net_arcs, setups, clocks)``: ``cell_arcs[(cell, out)]`` and
    ``net_arcs[(cell, in)]`` list ``((cell, port), ps)`` predecessors, ``setups[(cell,
    port)]`` is the setup time (ps), ``clocks`` the clock pins. Raises ``ValueError`` for a
    file that is not an SDF ``DELAYFILE``."""
    tree = _tree(text)
    if not tree or not isinstance(tree[0], list) or not tree[0] or tree[0][0] != "DELAYFILE":
        raise ValueError("not an SDF file: no (DELAYFILE ...)")
    cell_arcs, net_arcs = defaultdict(list), defaultdict(list)
    setups, clocks = {}, set()
    for cell in tree[0][1:]:
        if not isinstance(cell, list) or not cell or cell[0] != "CELL":
            continue
        inst = ""
        for e in cell[1:]:
            if isinstance(e, list) and e and e[0] == "INSTANCE" and len(e) > 1:
                inst = e[1].strip('"')
        for e in cell[1:]:
            if not isinstance(e, list) or not e:
                continue
            if e[0] == "DELAY":
                for group in e[1:]:
                    for arc in group[1:]:
                        if arc[0] == "IOPATH":
                            src, dst = _port(arc[1]), _port(arc[2])
                            cell_arcs[(inst, dst)].append(((inst, src), _delay(arc[3:])))
                        elif arc[0] == "INTERCONNECT":
                            sc, sp = arc[1].strip('"').rsplit("/", 1)
                            dc, dp = arc[2].strip('"').rsplit("/", 1)
                            net_arcs[(dc, dp)].append(((sc, sp), _delay(arc[3:])))
            elif e[0] == "TIMINGCHECK":
                for chk in e[1:]:
                    if chk[0] in ("SETUP", "SETUPHOLD"):
                        key = (inst, _port(chk[1]))
                        clocks.add((inst, _port(chk[2])))
                        setups[key] = max(setups.get(key, 0.0), _delay(chk[3:4]))
    return cell_arcs, net_arcs, setups, clocks


def longest_paths(text: str, count: int = 20, group_depth: int = 5) -> list[Path]:
    """The worst path into each endpoint, sorted, at most ``count`` of them and one per pair
    of (start, end) module (the first ``group_depth`` components of the dotted cell name)."""
    cell_arcs, net_arcs, setups, clocks = parse_sdf(text)

    def is_clock(node):
        return node in clocks or node[1].startswith("CLK")

    arrival, pred, busy = {}, {}, set()

    def solve(node):
        stack = [(node, False)]
        while stack:
            n, ready = stack.pop()
            if n in arrival:
                continue
            if n in net_arcs:
                # nextpnr's constant drivers tie off pins; they start no path
                comb = [a for a in net_arcs[n] if "$PACKER_" not in a[0][0].replace("\\", "")]
                launch = []
            else:
                arcs = cell_arcs.get(n, [])
                comb = [a for a in arcs if not is_clock(a[0])]
                launch = [a for a in arcs if is_clock(a[0])]
            if not ready:
                busy.add(n)
                stack.append((n, True))
                stack.extend((s, False) for s, _ in comb if s not in arrival and s not in busy)
                continue
            best, via = 0.0, None
            for s, d in launch:
                if d > best:
                    best, via = d, s
            for s, d in comb:
                if arrival.get(s, 0.0) + d > best:
                    best, via = arrival.get(s, 0.0) + d, s
            arrival[n], pred[n] = best, via
            busy.discard(n)
        return arrival[node]

    ends = sorted(((solve(ep) + su, ep) for ep, su in setups.items()), reverse=True)

    def module(name):
        return ".".join(name.split(".")[:group_depth]).split("_TRELLIS")[0]

    out, seen = [], set()
    for total, ep in ends:
        chain, n = [ep], ep
        while pred.get(n) is not None and len(chain) < 10000:
            n = pred[n]
            chain.append(n)
            if is_clock(n):
                break
        start = chain[-1]
        if start == ep:                                 # nothing drives it
            continue
        key = (module(start[0]), module(ep[0]))
        if key in seen:
            continue
        seen.add(key)
        cells: list[tuple[str, float]] = []
        for c in reversed(chain):
            if not cells or cells[-1][0] != c[0]:
                cells.append((c[0], arrival.get(c, 0.0) / 1000))
        out.append(Path(total / 1000, f"{start[0]}/{start[1]}", f"{ep[0]}/{ep[1]}", cells))
        if len(out) >= count:
            break
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m fpga.sdf_paths",
        description="Longest register-to-register paths from a nextpnr SDF file "
                    "(e.g. after --no-route: placement estimates).",
        epilog="example: nextpnr-ecp5 ... --no-route --sdf placed.sdf && "
               "python -m fpga.sdf_paths placed.sdf -n 40")
    ap.add_argument("sdf", help="SDF file written by nextpnr --sdf")
    ap.add_argument("-n", "--count", type=int, default=20, help="paths to list [20]")
    ap.add_argument("-v", "--verbose", action="store_true", help="list each path's cells")
    args = ap.parse_args(argv)
    try:
        with open(args.sdf) as f:
            paths = longest_paths(f.read(), args.count)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for p in paths:
        print(f"{p.delay:7.2f} ns  {p.start}  ->  {p.end}")
        if args.verbose:
            for cell, t in p.cells:
                print(f"         {t:7.2f}  {cell}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
