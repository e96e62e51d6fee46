"""``accelgen run``: a real CNN on real data through the generated accelerator."""

from __future__ import annotations

import time

import click
import numpy as np

from hw.config import PRESETS

__all__ = ["run", "run_digits"]


def run_digits(preset_name="small", overrides=(), *, images=360, batch=120,
               target="verilator", echo=print, progress=True):
    """Classify ``images`` held-out digits on the accelerator; returns a result dict.

    Every layer's ofmap is read back from DRAM and compared with the golden model.
    """
    from tqdm import tqdm

    from gen.cli import load_config
    from sw_driver.accelerator import Accelerator, ConvLayer
    from sw_driver.golden import conv2d
    from sw_driver.models.digits import load_model, load_test_set

    config = load_config(preset_name, overrides)
    qmodel = load_model()
    x_all, labels = load_test_set(limit=images)
    layers = [ConvLayer(l["weights"], l["bias"], stride=l["stride"], padding=l["padding"],
                        product_shift=l["product_shift"], output_shift=l["output_shift"],
                        relu=l["relu"]) for l in qmodel]
    acc = Accelerator(config, target)
    echo(f"accelerator: preset {preset_name}, {config.pe_rows}x{config.pe_cols} PEs, "
         f"{config.psum_width}-bit psums, GLB {config.glb_bytes // 1024} KB")
    t_build = time.perf_counter()
    acc.target.build()
    echo(f"Verilator build ready ({time.perf_counter() - t_build:.1f} s; cached per config)")
    exact = [True] * len(layers)
    preds, cycles, macs, wall = [], 0, 0, 0.0
    dense = stored = 0
    batches = range(0, len(x_all), batch)
    bar = tqdm(batches, desc="digits", unit="batch", disable=not progress)
    for b0 in bar:
        x = x_all[b0:b0 + batch]
        outs, stats = acc.run_network(x, layers)
        ref = x
        for i, (layer, y) in enumerate(zip(layers, outs)):
            ref = conv2d(ref, layer.weights, layer.bias, stride=layer.stride,
                         padding=layer.padding, product_shift=layer.product_shift,
                         output_shift=layer.output_shift, relu=layer.relu,
                         psum_width=config.psum_width, data_width=config.data_width)
            if not np.array_equal(ref, y):
                exact[i] = False
        preds.append(outs[-1].reshape(len(x), -1).argmax(axis=1))
        cycles += stats.cycles
        macs += stats.macs
        wall += stats.wall_seconds
        dense += sum(l.ofmap_dense_words for l in stats.layers)
        stored += sum(l.ofmap_words for l in stats.layers)
        bar.set_postfix(cycles=stats.cycles)
    pred = np.concatenate(preds)
    accuracy = float((pred == labels).mean())
    result = {
        "images": len(x_all), "accuracy": accuracy, "bit_exact": exact,
        "cycles": cycles, "cycles_per_image": cycles / len(x_all),
        "utilization": macs / (cycles * config.num_pes),
        "rlc_ratio": dense / max(1, stored),
        "sim_cycles_per_second": cycles / max(wall, 1e-9),
    }
    echo(f"accuracy: {accuracy:.1%} on {len(x_all)} held-out images "
         f"(scikit-learn digits)")
    for i, ok in enumerate(exact):
        echo(f"layer {i + 1}: {'bit-exact' if ok else 'MISMATCH'} against the golden model")
    echo(f"cycles per image: {result['cycles_per_image']:,.0f}")
    echo(f"PE utilization: {result['utilization']:.1%}")
    echo(f"RLC compression ratio of ofmaps in DRAM: {result['rlc_ratio']:.2f}x")
    echo(f"simulated cycles per second: {result['sim_cycles_per_second']:,.0f}")
    return result


@click.command()
@click.option("--model", type=click.Choice(["digits"]), default="digits", show_default=True,
              help="Network to run (digits: 3-layer CNN on scikit-learn's 8x8 digits).")
@click.option("--preset", "preset_name", default="small", show_default=True,
              type=click.Choice(sorted(PRESETS)))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--target", type=click.Choice(["verilator", "pysim"]), default="verilator",
              show_default=True)
@click.option("--images", default=360, show_default=True, help="Held-out images to classify.")
@click.option("--batch", default=120, show_default=True, help="Images per simulation run.")
def run(model, preset_name, overrides, target, images, batch):
    """Run a real CNN end to end on the generated accelerator in simulation.

    Reports accuracy, per-layer bit-exactness against the golden model, cycles per image,
    PE utilization, the RLC compression ratio and simulated cycles per second.

    \b
    Examples:
      accelgen run --model digits
      accelgen run --model digits --preset tiny --images 200
    """
    res = run_digits(preset_name, overrides, images=images, batch=batch, target=target,
                     echo=click.echo)
    if not all(res["bit_exact"]):
        raise click.ClickException("a layer did not match the golden model")
