"""StyleGAN2 training speed: the real training step (`GANTrainer.step`, set up by `facegan.train.stepper.runtime`
as `run_train` sets it up), timed in interleaved rounds; medians, with the settings.

    python bench/stylegan2_speed.py [--rounds 7] [--steps 16] [--threads 2] [--no-forms] [--json out.json]

CPU (always): the `cpu` preset at 64x64, batch 16, R1 every 16 and path length every 4 on, style mixing 0.9,
EMA. This implementation (facegan.ops: convolutions with a convolutional backward, one-node bias + activation,
one-kernel resampling, the demodulation as a matrix product; channels_last) against the reference path
(`facegan.ops.fast_ops(False)`: the plain PyTorch composition the project used before, NCHW), in the same
process with the same threads and determinism; the ratio of their median step times (goal <= 0.7). Then each
layer's modulated convolution in both forms, input scaling (what training uses) and per-sample weights in one
grouped convolution, forward + backward and with a double backward (R1-like), so the faster form is measured.

CUDA (when present): stylegan2-ada's `--cfg auto` at 256x256 (channel_base 16384, channel_max 512, batch 16,
minibatch-stddev group 4, 2 mapping layers, R1 gamma 0.8192 every 16, path length 2 every 4, style mixing 0.9,
G EMA of 5 kimg) and config-f (`preset: paper`, batch 32, R1 gamma 10), each in float32 and in mixed precision
(fp16 in the 4 highest-resolution blocks, conv_clamp 256): s/kimg and peak memory, beside the anchor
(stylegan2-ada-pytorch, 256x256 on one V100: 21.6-24.2 s/kimg; goal on one H100: <= 10 s/kimg).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from facegan import ops
from facegan.config import TrainConfig
from facegan.models.stylegan2 import ModulatedConv2d
from facegan.ops.conv import no_weight_grads
from facegan.train.gan import GANTrainer
from facegan.train.stepper import runtime

ANCHOR = "stylegan2-ada-pytorch --cfg auto, 256x256, one V100: 21.6-24.2 s/kimg (goal on one H100: <= 10)"


def cpu_config(threads: int, channels_last: bool) -> TrainConfig:
    return TrainConfig.model_validate({
        "model": "stylegan2", "z_dim": 128, "batch_size": 16, "lr_g": 0.002, "lr_d": 0.002, "beta1": 0.0,
        "beta2": 0.99, "ema": 0.99, "stylegan2": {"preset": "cpu", "style_mixing": 0.9},
        "r1": {"gamma": 0.1, "every": 16}, "path_length": {"weight": 2.0, "every": 4}, "device": "cpu",
        "threads": threads, "channels_last": channels_last,
    })  # fmt: skip


def gpu_configs(amp: str) -> dict[str, TrainConfig]:
    mixed = {"amp_blocks": 4, "conv_clamp": 256.0} if amp != "off" else {}
    common = {"model": "stylegan2", "z_dim": 512, "beta1": 0.0, "beta2": 0.99, "device": "cuda", "amp": amp,
              "channels_last": True, "deterministic": "auto", "path_length": {"weight": 2.0, "every": 4}}  # fmt: skip
    auto = TrainConfig.model_validate({
        **common, "batch_size": 16, "lr_g": 0.0025, "lr_d": 0.0025, "ema": 0.5 ** (16 / 5000),
        "stylegan2": {"channel_base": 16384, "channel_max": 512, "mapping_layers": 2, "style_mixing": 0.9, **mixed},
        "r1": {"gamma": 0.0002 * 256**2 / 16, "every": 16},
    })  # fmt: skip
    paper = TrainConfig.model_validate({
        **common, "batch_size": 32, "lr_g": 0.002, "lr_d": 0.002, "ema": 0.999,
        "stylegan2": {"preset": "paper", "style_mixing": 0.9, **mixed}, "r1": {"gamma": 10.0, "every": 16},
    })  # fmt: skip
    return {"auto 256, batch 16": auto, "config-f 256, batch 32": paper}


def trainer(cfg: TrainConfig, res: int) -> GANTrainer:
    dist, device = runtime(cfg)
    images = torch.randint(0, 256, (512, 3, res, res), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return GANTrainer(cfg, images.pin_memory() if device.type == "cuda" else images, None, [], device, dist)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(sides: dict[str, tuple[GANTrainer, bool]], rounds: int, steps: int) -> dict[str, list[float]]:
    """Seconds per step of each side, one round of `steps` steps per side in turn (steps: whole lazy cycles)."""
    out: dict[str, list[float]] = {k: [] for k in sides}
    for t, fast in sides.values():  # warm-up: one lazy cycle each
        with ops.fast_ops(fast):
            for _ in range(steps):
                t.step()
    for _ in range(rounds):
        for name, (t, fast) in sides.items():
            with ops.fast_ops(fast):
                sync(t.device)
                t0 = time.perf_counter()
                for _ in range(steps):
                    t.step()
                sync(t.device)
                out[name].append((time.perf_counter() - t0) / steps)
    return out


def settings(cfg: TrainConfig, device: torch.device) -> str:
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, deterministic "
            f"{torch.are_deterministic_algorithms_enabled()}, cudnn.benchmark {torch.backends.cudnn.benchmark}, "
            f"TF32 {torch.backends.cuda.matmul.allow_tf32}, amp {cfg.amp}, device {device}")  # fmt: skip


def cpu_step(args: argparse.Namespace) -> dict[str, Any]:
    with ops.fast_ops(False):
        reference = trainer(cpu_config(args.threads, channels_last=False), 64)
    ours = trainer(cpu_config(args.threads, channels_last=True), 64)
    times = interleaved({"reference": (reference, False), "facegan": (ours, True)}, args.rounds, args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    print("\n## CPU: `cpu` preset 64x64, batch 16, R1/16 + path length/4, mixing 0.9, EMA")
    print(settings(ours.cfg, ours.device))
    print(f"median of {args.rounds} interleaved rounds of {args.steps} steps")
    print("reference (plain PyTorch ops, NCHW): " + f"{1000 * med['reference']:.1f} ms/step")
    print("facegan (facegan.ops, channels_last): " + f"{1000 * med['facegan']:.1f} ms/step")
    print(f"ratio facegan / reference: {med['facegan'] / med['reference']:.3f}  (goal <= 0.7)")
    print("rounds (ms): " + "; ".join(f"{k} {[round(1000 * x) for x in v]}" for k, v in times.items()))
    return {"median_s": med, "rounds_s": times, "ratio": med["facegan"] / med["reference"]}


def first(m: ModulatedConv2d, x: torch.Tensor, s: torch.Tensor, form: str) -> None:
    y = getattr(m, form)(x, m.modulation(s))
    y.backward(torch.ones_like(y))


def second(m: ModulatedConv2d, x: torch.Tensor, s: torch.Tensor, form: str) -> None:
    """R1-like: the gradient w.r.t. the input, then the backward of its squared norm."""
    y = getattr(m, form)(x, m.modulation(s))
    with no_weight_grads():
        (g,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
    g.pow(2).sum().backward()


def modconv_forms(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each G layer of the `cpu` preset at 64 px: both forms of the modulated conv, interleaved medians."""
    torch.set_num_threads(args.threads)
    layers = [(8, 64, 64, False), (16, 64, 64, True), (16, 64, 64, False), (32, 64, 64, True), (32, 64, 64, False),
              (64, 64, 32, True), (64, 32, 32, False)]  # fmt: skip
    print("\n## Modulated conv forms (batch 16, ms, median of interleaved rounds): first order | with double backward")
    print("| layer | scaled f+b | grouped f+b | scaled 2nd | grouped 2nd | faster |\n|---|---|---|---|---|---|")
    out = []
    for res, cin, cout, up in layers:
        m = ModulatedConv2d(cin, cout, 3, 128, upsample=up).train()
        x = torch.randn(16, cin, res // 2 if up else res, res // 2 if up else res, requires_grad=True)
        s = torch.randn(16, 128)

        t: dict[tuple[str, str], list[float]] = {}
        for _ in range(2):
            for fn in (first, second):
                for form in ("_scaled", "_fused"):
                    fn(m, x, s, form)
        for _ in range(args.rounds):
            for fn in (first, second):
                for form in ("_scaled", "_fused"):
                    t0 = time.perf_counter()
                    fn(m, x, s, form)
                    t.setdefault((fn.__name__, form), []).append(1000 * (time.perf_counter() - t0))
        med = {k: statistics.median(v) for k, v in t.items()}
        faster = "scaled" if med["first", "_scaled"] + med["second", "_scaled"] / 4 <= (
            med["first", "_fused"] + med["second", "_fused"] / 4) else "grouped"  # fmt: skip
        name = f"{res} px {'up ' if up else ''}{cin}->{cout}"
        print(f"| {name} | {med['first', '_scaled']:.1f} | {med['first', '_fused']:.1f} | "
              f"{med['second', '_scaled']:.1f} | {med['second', '_fused']:.1f} | {faster} |")  # fmt: skip
        out.append({"layer": name, **{f"{a}{b}": v for (a, b), v in med.items()}, "faster": faster})
    return out


def gpu(args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n## CUDA: {torch.cuda.get_device_name()}; anchor: {ANCHOR}")
    results: dict[str, Any] = {}
    for amp in ("off", "fp16"):
        for name, cfg in gpu_configs(amp).items():
            t = trainer(cfg, 256)
            torch.cuda.reset_peak_memory_stats()
            times = interleaved({name: (t, True)}, args.rounds, args.steps)[name]
            sec = statistics.median(times)
            kimg = sec / (cfg.batch_size / 1000)
            peak = torch.cuda.max_memory_allocated() / 2**30
            label = f"{name}, {'fp32' if amp == 'off' else 'fp16 in 4 blocks + clamp 256'}"
            print(f"{label:58s} {kimg:7.2f} s/kimg  ({cfg.batch_size / sec:6.1f} img/s, peak {peak:.1f} GiB)")
            results[label] = {"s_per_kimg": kimg, "peak_gib": peak, "settings": settings(cfg, t.device)}
            del t
            torch.cuda.empty_cache()
    print(f"settings: {settings(cfg, torch.device('cuda'))}")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    ap.add_argument("--steps", type=int, default=16, help="steps per round: whole lazy-regularisation cycles")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-forms", action="store_true", help="skip the per-layer modulated conv forms")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    results: dict[str, Any] = {"cpu": cpu_step(args)}
    if not args.no_forms:
        results["forms"] = modconv_forms(args)
    if torch.cuda.is_available():
        results["cuda"] = gpu(args)
    else:
        print("\nno CUDA device: the GPU figures (auto 256 and config-f, fp32 and mixed precision) are not measured")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
