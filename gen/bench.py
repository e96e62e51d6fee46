"""``accelgen bench``: AlexNet CONV1-5 on the generated accelerator against the Eyeriss chip.

Fairness rules (``BENCHMARKS.md``): the 12 x 14 ``eyeriss`` preset, batch 4, the DRAM link
limited to 0.3 64-bit words per core cycle (``DramModel.eyeriss``), cycles counted by the
hardware's ``cycles`` counter from start to the last ofmap word written to DRAM, data
loading included. Pretrained weights cannot be downloaded, so each layer gets seeded random
weights (He-scaled, Q8.8) and a synthetic Q8.8 ifmap whose zero fraction follows the
measured Eyeriss figures (``ALEXNET``). Every ofmap is compared with the golden model.

Per layer the table gives MACs, ideal cycles (MACs / PEs), measured cycles, utilization,
Eyeriss's cycles scaled to the batch and our speed-up, DRAM words per MAC, the ofmap RLC
ratio, MACs skipped by zero gating and, with ``--gating-baseline``, the cycles that zero
skipping saved against the same run with ``zero_gating`` off. The analytical model's
prediction (``sw_driver.perfmodel``) is printed beside the RTL figure.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import click
import numpy as np

__all__ = ["BenchLayer", "ALEXNET", "bench", "run_bench", "synthetic_layer"]

#: Q8.8 fixed point, the Eyeriss-faithful numerics of DESIGN.md section 2.
FRAC_BITS = 8


@dataclass(frozen=True)
class BenchLayer:
    """One benchmark layer. ``H``/``W`` unpadded, ``C``/``M`` totals over ``groups``;
    ``eyeriss_cycles`` for batch 4 (ISSCC 2016, BENCHMARKS.md); ``zero_fraction`` of the
    ifmap (0 for the image, then the ReLU'd activations)."""

    name: str
    C: int
    H: int
    W: int
    M: int
    R: int
    S: int
    U: int
    padding: int
    groups: int
    eyeriss_cycles: float
    zero_fraction: float

    def shape(self, N: int):
        from sw_driver.mapper import LayerShape
        return LayerShape(N, self.C, self.H, self.W, self.M, self.R, self.S, self.U,
                          self.padding, self.groups)

    def macs_per_image(self) -> int:
        return self.shape(1).macs

    def scaled(self, c_div: int, m_div: int) -> "BenchLayer":
        """The layer with C and M divided (kept divisible by ``groups``); Eyeriss cycles
        scaled by the MAC ratio. For quick runs and CI, not for the comparison."""
        g = self.groups
        C = max(g, self.C // c_div // g * g)
        M = max(g, self.M // m_div // g * g)
        f = (C * M) / (self.C * self.M)
        return replace(self, C=C, M=M, eyeriss_cycles=self.eyeriss_cycles * f)


# Grouped AlexNet as run by Eyeriss. Zero fractions: the image has none; the ReLU'd ifmaps
# go from about 40% (CONV2) to about 75% (CONV5) (BENCHMARKS.md), CONV3/4 interpolated.
ALEXNET = [
    BenchLayer("conv1", 3, 227, 227, 96, 11, 11, 4, 0, 1, 4.18e6, 0.0),
    BenchLayer("conv2", 96, 27, 27, 256, 5, 5, 1, 2, 2, 8.38e6, 0.40),
    BenchLayer("conv3", 256, 13, 13, 384, 3, 3, 1, 1, 1, 4.72e6, 0.52),
    BenchLayer("conv4", 384, 13, 13, 384, 3, 3, 1, 1, 2, 3.68e6, 0.63),
    BenchLayer("conv5", 384, 13, 13, 256, 3, 3, 1, 1, 2, 2.10e6, 0.75),
]
NETWORKS = {"alexnet": ALEXNET}
EYERISS_BATCH = 4
#: Eyeriss: 15.4 MB of DRAM traffic per batch of 4, i.e. 0.0029 16-bit accesses per MAC.
EYERISS_BYTES_PER_MAC = 15.4e6 / (4 * 665.8e6)


def synthetic_layer(layer: BenchLayer, N: int, seed: int = 0):
    """Seeded ifmap (N, C, H, W) int16 with ``layer.zero_fraction`` zeros, He-scaled Q8.8
    weights (M, C/groups, R, S), and bias (M,) in accumulator units (centred so that about
    half the ReLU'd outputs are zero)."""
    rng = np.random.default_rng(seed)
    x = np.abs(rng.normal(0.0, 1.0, (N, layer.C, layer.H, layer.W))) * (1 << FRAC_BITS)
    x = np.minimum(x, 32767).astype(np.int16)
    if layer.zero_fraction:
        x[rng.random(x.shape) < layer.zero_fraction] = 0
    fan_in = layer.C // layer.groups * layer.R * layer.S
    sigma = (1 << FRAC_BITS) * math.sqrt(2.0 / fan_in)
    w = np.clip(np.rint(rng.normal(0.0, sigma, (layer.M, layer.C // layer.groups,
                                                 layer.R, layer.S))), -32768, 32767)
    # Flooring each product (``>> product_shift``, DESIGN.md section 2) loses 0.5 on
    # average per non-zero product; the bias gives it back, so that the ReLU'd ofmap is about
    # half zeros as with trained weights rather than almost all zeros.
    floor_loss = fan_in * (1.0 - layer.zero_fraction) / 2
    bias = rng.integers(-64, 64, layer.M) + int(round(floor_loss))
    return x, w.astype(np.int16), bias


def _predict(config, shape, dram, mapping, x, y, ifmap_rlc, ofmap_rlc):
    """The analytical model (``sw_driver.perfmodel``) for one layer on the real data."""
    from sw_driver.perfmodel import predict_layer
    return predict_layer(config, shape, dram=dram, ifmap=x, ofmap=y, ifmap_rlc=ifmap_rlc,
                         ofmap_rlc=ofmap_rlc, relu=True, bias=True, mapping=mapping)


def _select_layers(network: str, layers, batch: int, c_div: int, m_div: int):
    """The benchmark layers to run: ``layers`` (names) of ``network``, C and M divided.

    Raises ValueError for an unknown network or layer name, or a batch < 1."""
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose one of {sorted(NETWORKS)}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    table = NETWORKS[network]
    names = [l.name for l in table]
    if layers:
        bad = [n for n in layers if n not in names]
        if bad:
            raise ValueError(f"unknown layer(s) {bad}; {network} has {names}")
        table = [l for l in table if l.name in layers]
    if c_div != 1 or m_div != 1:
        table = [l.scaled(c_div, m_div) for l in table]
    return table


def run_bench(network: str = "alexnet", *, layers=None, batch: int = 4,
              preset_name: str = "eyeriss", overrides=(), c_div: int = 1, m_div: int = 1,
              dram: str = "eyeriss", gating_baseline: bool = False, model_only: bool = False,
              seed: int = 0, threads: int | str = 1, echo=print,
              progress: bool = True) -> list[dict]:
    """Run the benchmark; returns one row (dict) per layer.

    ``threads``: Verilator threads of the model (an int, or ``"auto"``:
    :func:`sw_driver.targets.auto_threads`, 2 on a machine with 4+ cores for arrays of 100+
    PEs, else 1).

    Raises
    ------
    ValueError
        Unknown network or layer names, a batch < 1, or ``threads`` neither ``"auto"`` nor
        an int >= 1.
    sw_driver.targets.AcceleratorError
        If the hardware reports an error or a result is not bit-exact.
    """
    from tqdm import tqdm

    from gen.cli import load_config
    from sw_driver.accelerator import Accelerator
    from sw_driver.golden import conv2d
    from sw_driver.strips import plan_layer
    from sw_driver.targets import AcceleratorError, DramModel, auto_threads

    table = _select_layers(network, layers, batch, c_div, m_div)
    config = load_config(preset_name, overrides)
    dram_model = DramModel.eyeriss() if dram == "eyeriss" else DramModel()
    if threads == "auto":
        threads = auto_threads(config)
    elif isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be 'auto' or an int >= 1, not {threads!r}")
    acc = None if model_only else Accelerator(config, "verilator", dram=dram_model,
                                              threads=threads)
    acc_nogate = None
    if gating_baseline and not model_only:
        acc_nogate = Accelerator(replace(config, zero_gating=False), "verilator",
                                 dram=dram_model, threads=threads)
    for a in (acc, acc_nogate):
        if a is not None:
            t0 = time.perf_counter()
            echo(f"Verilator model of preset {preset_name}, {threads} thread(s) (built once "
                 f"per config; the 12x14 array takes 4-20 minutes the first time)...")
            a.target.build()
            echo(f"  ready in {time.perf_counter() - t0:.0f} s")
    rows = []
    bar = tqdm(table, desc=f"{network} on {preset_name}", unit="layer",
               disable=not progress)
    for layer in bar:
        bar.set_postfix_str(layer.name)
        shape = layer.shape(batch)
        macs = shape.macs
        row = {"layer": layer.name, "N": batch, "C": layer.C, "M": layer.M,
               "H": layer.H, "R": layer.R, "U": layer.U, "groups": layer.groups,
               "macs": macs, "ideal_cycles": macs / config.num_pes,
               "eyeriss_cycles": layer.eyeriss_cycles * batch / EYERISS_BATCH,
               "ifmap_zero_fraction": layer.zero_fraction}
        try:
            # each layer runs as a network of its own (its first layer): strips allowed
            _, strips = plan_layer(shape, config, dram_rate=dram_model.rate_num /
                                   dram_model.rate_den, strips_if_cheaper=True)
        except ValueError as e:
            row["status"] = "not mappable"
            row["reason"] = str(e)
            rows.append(row)
            bar.write(f"{layer.name}: not mappable on {preset_name}: {e}")
            continue
        x, w, bias = synthetic_layer(layer, batch, seed)
        kw = dict(stride=layer.U, padding=layer.padding, groups=layer.groups,
                  product_shift=FRAC_BITS, output_shift=0, relu=True)
        ref = conv2d(x, w, bias, psum_width=config.psum_width,
                     data_width=config.data_width, **kw)
        ifmap_rlc = layer.zero_fraction > 0 and config.rlc
        mapping = strips[0].mapping
        pred = _predict(config, shape, dram_model, mapping if len(strips) == 1 else None,
                        x, ref, ifmap_rlc, config.rlc)
        row.update({"model_cycles": pred.cycles,
                    "model_dram_words": pred.counts["dram_reads"] + pred.counts["dram_writes"],
                    "model_counts": dict(pred.counts),
                    "passes": sum(s.mapping.n_passes for s in strips),
                    "active_pes": mapping.active_pes,
                    "strips": len(strips),
                    "mapping": (f"{len(strips)} row strips of {mapping.layer.E} ofmap rows, "
                                if len(strips) > 1 else "")
                               + f"p={mapping.p} q={mapping.q} e={mapping.e} "
                               f"r_sets={mapping.r_sets} t_sets={mapping.t_sets} "
                               f"t_rows={mapping.t_rows} "
                               f"nb={mapping.nb} buffers={mapping.buffers}"
                               + (" single_psum" if mapping.single_psum else "")})
        if model_only:
            row["status"] = "model only"
            row["of_ideal"] = row["ideal_cycles"] / pred.cycles
            row["speedup_vs_eyeriss"] = row["eyeriss_cycles"] / pred.cycles
            rows.append(row)
            continue
        y, stats = acc.conv2d(x, w, bias, ifmap_rlc=ifmap_rlc, ofmap_rlc=config.rlc, **kw)
        if not np.array_equal(y, ref):
            bad = int(np.count_nonzero(y != ref))
            raise AcceleratorError(f"{layer.name}: ofmap differs from the golden model in "
                                   f"{bad} of {ref.size} values")
        cyc = stats.cycles
        k = stats.counters
        row.update({
            "status": "bit-exact",
            "cycles": cyc,
            "utilization": macs / (cyc * config.num_pes),
            "of_ideal": row["ideal_cycles"] / cyc,
            "speedup_vs_eyeriss": row["eyeriss_cycles"] / cyc,
            "dram_words": k["dram_reads"] + k["dram_writes"],
            "dram_words_per_mac": (k["dram_reads"] + k["dram_writes"]) / macs,
            "dram_bytes_per_mac": 8 * (k["dram_reads"] + k["dram_writes"]) / macs,
            "rlc_ratio": stats.rlc_ratio,
            "macs_gated": k["macs_gated"],
            "sim_cycles_per_s": stats.cycles_per_second,
            "wall_s": stats.wall_seconds,
        })
        if row["model_cycles"]:
            row["model_error"] = row["model_cycles"] / cyc - 1
        if acc_nogate is not None:
            y2, st2 = acc_nogate.conv2d(x, w, bias, ifmap_rlc=ifmap_rlc,
                                        ofmap_rlc=config.rlc, **kw)
            if not np.array_equal(y2, ref):
                raise AcceleratorError(f"{layer.name}: zero_gating=False run not bit-exact")
            row["cycles_no_gating"] = st2.cycles
            row["cycles_saved_by_gating"] = st2.cycles - cyc
        rows.append(row)
    return rows


COLUMNS = [("layer", "layer", "{}"), ("macs", "MACs", "{:,}"),
           ("ideal_cycles", "ideal", "{:,.0f}"), ("model_cycles", "model", "{:,.0f}"),
           ("cycles", "measured", "{:,}"), ("of_ideal", "of ideal", "{:.1%}"),
           ("eyeriss_cycles", "Eyeriss", "{:,.0f}"),
           ("speedup_vs_eyeriss", "speed-up", "{:.2f}x"),
           ("dram_words_per_mac", "DRAM w/MAC", "{:.5f}"), ("rlc_ratio", "RLC", "{:.2f}x"),
           ("macs_gated", "MACs gated", "{:,}"),
           ("cycles_saved_by_gating", "gating saved", "{:,}"), ("status", "status", "{}")]


def format_table(rows) -> str:
    def cell(row, key, fmt):
        v = row.get(key)
        if v is None or v == "":
            return "-"
        try:
            return fmt.format(v)
        except (ValueError, TypeError):
            return str(v)
    head = [h for _, h, _ in COLUMNS]
    body = [[cell(r, k, f) for k, _, f in COLUMNS] for r in rows]
    tot = {"layer": "total"}
    for key in ("macs", "ideal_cycles", "model_cycles", "cycles", "eyeriss_cycles",
                "macs_gated", "cycles_saved_by_gating"):
        vals = [r.get(key) for r in rows]
        if vals and all(v is not None for v in vals):
            tot[key] = sum(vals)
    if tot.get("cycles"):
        tot["of_ideal"] = tot["ideal_cycles"] / tot["cycles"]
        tot["speedup_vs_eyeriss"] = tot["eyeriss_cycles"] / tot["cycles"]
    body.append([cell(tot, k, f) for k, _, f in COLUMNS])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b[:-1], widths)) + "  " + b[-1]
              for b in body]
    return "\n".join(lines)


def write_outputs(rows, out_dir: Path, meta: dict):
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = []
    for r in rows:
        keys += [k for k, v in r.items() if k not in keys and not isinstance(v, dict)]
    with open(out_dir / "bench.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        wr.writeheader()
        wr.writerows(rows)
    (out_dir / "bench.json").write_text(json.dumps({"meta": meta, "layers": rows}, indent=2,
                                                   default=float) + "\n")
    plot(rows, out_dir / "bench.png", meta)


def plot(rows, path: Path, meta: dict):
    """Bar chart per layer: ideal, Eyeriss, model and measured cycles."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["layer"] for r in rows]
    series = [("ideal_cycles", "ideal (MACs/PEs)", "#bbbbbb"),
              ("eyeriss_cycles", "Eyeriss chip", "#d62728"),
              ("model_cycles", "analytical model", "#ff7f0e"),
              ("cycles", "this design (RTL)", "#1f77b4")]
    series = [s for s in series if any(r.get(s[0]) for r in rows)]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4))
    wid = 0.8 / len(series)
    for i, (key, label, color) in enumerate(series):
        vals = [(r.get(key) or 0) / 1e6 for r in rows]
        ax.bar(np.arange(len(rows)) + (i - (len(series) - 1) / 2) * wid, vals, wid,
               label=label, color=color)
    ax.set_xticks(np.arange(len(rows)), names)
    ax.set_ylabel("cycles (millions)")
    title = (f"{meta.get('network', '')}, batch {meta.get('batch')}, preset "
             f"{meta.get('preset')}, DRAM {meta.get('dram')}")
    if meta.get("scale_c", 1) != 1 or meta.get("scale_m", 1) != 1:
        title += (f"\nC/{meta['scale_c']}, M/{meta['scale_m']}: Eyeriss bars scaled by MACs "
                  "(not a fair comparison)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


#: The per-layer floor of BENCHMARKS.md: 75% of ideal.
TARGET_UTILIZATION = 0.75
#: ``--model-check`` runs the model on a layer's plans under the target only up to this many.
MODEL_CHECK_MAX = 64


def run_bounds(network: str = "alexnet", *, layers=None, batch: int = 4,
               preset_name: str = "eyeriss", overrides=(), c_div: int = 1, m_div: int = 1,
               dram: str = "eyeriss", seed: int = 0, model_check: bool = False,
               out_dir: Path = Path("build/bench"), echo=print) -> dict:
    """Lower bounds (:func:`sw_driver.bounds.layer_bounds`) per layer on the benchmark's
    synthetic data: the fewest cycles and DRAM words any mapping the driver can choose
    could reach, against the targets (75% of ideal per layer; DRAM words at most
    Eyeriss's). Prints a table, writes OUT/bounds.json and returns its content.

    Per layer it also counts the plans (strip count and mapping) whose cycle bound is under
    the 75% target (:func:`sw_driver.bounds.plans_below`); with ``model_check`` it runs the
    analytical model on each of them, for layers with at most :data:`MODEL_CHECK_MAX`, and
    reports the fewest cycles the model finds. No plan outside that list can reach 75%.

    Only the network's first layer is searched in row strips (``run_bench`` would let any
    layer run in strips; the mapper keeps AlexNet CONV2-5 whole), so for later layers the
    bounds cover whole-layer mappings only.

    Raises
    ------
    ValueError
        Unknown network or layer names, or a batch < 1.
    """
    from tqdm import tqdm

    from gen.cli import load_config
    from sw_driver.bounds import layer_bounds
    from sw_driver.golden import conv2d
    from sw_driver.targets import DramModel

    chosen = _select_layers(network, layers, batch, c_div, m_div)
    config = load_config(preset_name, tuple(overrides))
    rate = 0.3 if dram == "eyeriss" else 1.0
    out = {"network": network, "batch": batch, "preset": preset_name, "dram_rate": rate,
           "layers": []}
    echo(f"{'layer':6} {'cycles >=':>11} {'util <=':>8} {'strips':>6} {'DRAM words >=':>14} "
         f"{'per MAC (bytes)':>15} {'mappings':>8} {'can 75%':>8}")
    for ly in chosen:
        shape = ly.shape(batch)
        x, w, b = synthetic_layer(ly, batch, seed)
        y = conv2d(x, w, b, stride=ly.U, padding=ly.padding, groups=ly.groups,
                   product_shift=FRAC_BITS, output_shift=0, relu=True,
                   psum_width=config.psum_width, data_width=config.data_width)
        ideal = shape.macs / config.num_pes
        target = ideal / TARGET_UTILIZATION
        # Strips only for the network's first layer: run_bench lets every layer run in
        # strips, but the mapper keeps CONV2-5 whole, and searching every strip count of
        # every later layer takes more than 10 minutes.
        bd = layer_bounds(shape, config, x, y, dram_rate=rate,
                          ifmap_rlc=ly.zero_fraction > 0 and config.rlc,
                          ofmap_rlc=config.rlc,
                          strips=ly.name == NETWORKS[network][0].name, target=target)
        plans = bd.plans
        row = {"layer": ly.name, "macs": shape.macs, "ideal_cycles": ideal,
               "cycles_bound": bd.cycles, "utilization_bound": ideal / bd.cycles,
               "cycles_strips": bd.cycles_strips, "dram_words_bound": bd.dram_words,
               "dram_strips": bd.dram_strips,
               "bytes_per_mac_bound": 8 * bd.dram_words / shape.macs,
               "mappings": bd.candidates}
        row["plans_under_target"] = len(plans)
        out["layers"].append(row)
        echo(f"{ly.name:6} {bd.cycles:>11,} {ideal / bd.cycles:>8.1%} {bd.cycles_strips:>6} "
             f"{bd.dram_words:>14,} {row['bytes_per_mac_bound']:>15.4f} {bd.candidates:>8} "
             f"{len(plans):>8}")
        if model_check and 0 < len(plans) <= MODEL_CHECK_MAX:
            dm = DramModel.eyeriss() if dram == "eyeriss" else DramModel()
            checked = []
            for bound, plan in tqdm(plans, desc=f"{ly.name} model", unit="plan",
                                    leave=False):
                pred = _predict(config, shape, dm, plan if len(plan) > 1 else plan[0].mapping,
                                x, y, ly.zero_fraction > 0 and config.rlc, config.rlc)
                mp = plan[0].mapping
                checked.append({"bound": bound, "model": pred.cycles, "strips": len(plan),
                                "p": mp.p, "q": mp.q, "t_sets": mp.t_sets, "e": mp.e,
                                "nb": mp.nb, "buffers": mp.buffers,
                                "ifmap_resident": mp.ifmap_resident,
                                "single_psum": mp.single_psum})
            checked.sort(key=lambda r: r["model"])
            row["model_checked"] = checked
            best = checked[0]
            echo(f"       {len(plans)} plan(s) with a cycle bound under 75% of ideal "
                 f"({target:,.0f}); the model's fewest: {best['model']:,} cycles "
                 f"({ideal / best['model']:.1%}), {best['strips']} strip(s), p={best['p']} "
                 f"t={best['t_sets']}{' resident ifmap' if best['ifmap_resident'] else ''}")
        elif model_check and plans:
            echo(f"       {len(plans)} plans with a cycle bound under 75% of ideal: more than "
                 f"{MODEL_CHECK_MAX}, not model-checked")
    dw = sum(r["dram_words_bound"] for r in out["layers"])
    macs = sum(r["macs"] for r in out["layers"])
    out["dram_words_bound"] = dw
    out["bytes_per_mac_bound"] = 8 * dw / macs if macs else 0.0
    echo(f"DRAM words >= {dw:,} in all: {out['bytes_per_mac_bound']:.4f} bytes per MAC "
         f"(Eyeriss: {EYERISS_BYTES_PER_MAC:.4f})")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bounds.json").write_text(json.dumps(out, indent=1))
    return out


@click.command("bench")
@click.argument("network", type=click.Choice(sorted(NETWORKS)), default="alexnet")
@click.option("--layers", default="", help="Comma-separated layer names (default: all).")
@click.option("--batch", "-N", default=4, show_default=True, help="Images per layer run.")
@click.option("--preset", "preset_name", default="eyeriss", show_default=True,
              help="Named configuration (the comparison with Eyeriss needs 'eyeriss').")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one configuration parameter (repeatable).")
@click.option("--scale-c", "c_div", default=1, show_default=True,
              help="Divide every layer's C by this (quick runs; not a fair comparison).")
@click.option("--scale-m", "m_div", default=1, show_default=True,
              help="Divide every layer's M by this (quick runs; not a fair comparison).")
@click.option("--dram", type=click.Choice(["eyeriss", "unlimited"]), default="eyeriss",
              show_default=True, help="DRAM link: Eyeriss's 0.3 words/cycle, or 1 word/cycle.")
@click.option("--gating-baseline", is_flag=True,
              help="Also run every layer with zero_gating off (a second Verilator build) and "
                   "report the cycles zero skipping saved.")
@click.option("--model-only", is_flag=True,
              help="Only the analytical model: no RTL simulation.")
@click.option("--bounds", "bounds_only", is_flag=True,
              help="Only lower bounds on cycles and DRAM words over every mapping the driver "
                   "can choose (sw_driver.bounds): what no mapping of this hardware can beat.")
@click.option("--model-check", is_flag=True,
              help="With --bounds: run the analytical model on every plan whose cycle bound "
                   f"is under 75% of ideal (layers with at most {MODEL_CHECK_MAX} such plans).")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic data.")
@click.option("--threads", default="auto", show_default=True, metavar="N|auto",
              help="Verilator threads of the model; 'auto': 2 for arrays of 100+ PEs on a "
                   "machine with 4+ cores, else 1 (on 2 cores one thread is 5-15% faster "
                   "for eyeriss).")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("build/bench"), show_default=True,
              help="Where bench.csv, bench.json and bench.png go.")
def bench(network, layers, batch, preset_name, overrides, c_div, m_div, dram, gating_baseline,
          model_only, bounds_only, model_check, seed, threads, out_dir):
    """Benchmark a network's CONV layers against the Eyeriss chip (BENCHMARKS.md).

    Runs every layer on the Verilator model, checks it bit-exact against the golden model,
    prints the table and writes OUT/bench.csv, OUT/bench.json and OUT/bench.png.

    \b
    Examples:
      accelgen bench alexnet                          # the fair comparison (about 15 min)
      accelgen bench alexnet --layers conv3 --batch 1
      accelgen bench alexnet --model-only             # analytical model, about a minute
      accelgen bench alexnet --bounds                 # lower bounds, under a minute
      accelgen bench alexnet --bounds --model-check   # and the model on plans under 75%
      accelgen bench alexnet --preset small --scale-c 8 --scale-m 8 --batch 1
    """
    layer_list = [s.strip() for s in layers.split(",") if s.strip()] or None
    if threads != "auto":
        try:
            threads = int(threads)
        except ValueError:
            threads = 0
        if threads < 1:
            raise click.BadParameter("an int >= 1 or 'auto'", param_hint="--threads")
    t0 = time.perf_counter()
    if model_check and not bounds_only:
        raise click.UsageError("--model-check goes with --bounds")
    if bounds_only:
        try:
            run_bounds(network, layers=layer_list, batch=batch, preset_name=preset_name,
                       overrides=overrides, c_div=c_div, m_div=m_div, dram=dram, seed=seed,
                       model_check=model_check, out_dir=out_dir, echo=click.echo)
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        return
    try:
        rows = run_bench(network, layers=layer_list, batch=batch, preset_name=preset_name,
                         overrides=overrides, c_div=c_div, m_div=m_div, dram=dram,
                         gating_baseline=gating_baseline, model_only=model_only, seed=seed,
                         threads=threads, echo=click.echo)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    meta = {"network": network, "batch": batch, "preset": preset_name,
            "overrides": list(overrides), "scale_c": c_div, "scale_m": m_div, "dram": dram,
            "seed": seed, "threads": threads, "wall_s": time.perf_counter() - t0,
            "eyeriss_bytes_per_mac": EYERISS_BYTES_PER_MAC}
    click.echo(format_table(rows))
    write_outputs(rows, out_dir, meta)
    click.echo(f"wrote {out_dir}/bench.csv, bench.json, bench.png "
               f"({meta['wall_s']:.0f} s)")
