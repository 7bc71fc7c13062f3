"""StyleGAN2 training speed: the real training step (`GANTrainer.step`, set up by `facegan.train.stepper.runtime`
as `run_train` sets it up), timed in interleaved rounds; medians, with the settings.

    python bench/stylegan2_speed.py [--rounds 7] [--steps 16] [--threads 2] [--no-forms] [--cuda-only] [--profile]
                                    [--json out.json]

CPU (unless --cuda-only): the `cpu` preset at 64x64, batch 16, R1 every 16 and path length every 4 on, style mixing 0.9,
EMA. This implementation (facegan.ops: convolutions with a convolutional backward, one-node bias + activation
and layer epilogue, one-kernel resampling, the demodulation as a matrix product, toRGB as a batched matmul; D's
gains folded into its convolutions and reals + fakes in one D pass; channels_last) against the reference path
(`facegan.ops.fast_ops(False)`: the plain PyTorch composition the project used before, NCHW), in the same
process with the same threads and determinism. Each round is one lazy-regularisation cycle per side, the sides
alternating step by step; the ratio of their median step times (goal <= 0.7). A third side, the reference path in
channels_last, gives the ratio at one layout: the ops' share apart from the layout's. Then each modulated
convolution of G in its forms (input scaling, per-sample weights in one grouped convolution, for 1x1 layers a
batched matmul), forward + backward and with a double backward (R1-like), so the form training uses is measured.

CUDA (when present): stylegan2-ada's `--cfg auto` at 256x256 (channel_base 16384, channel_max 512, batch 16,
minibatch-stddev group 4, 2 mapping layers, R1 gamma 0.8192 every 16, path length 2 every 4, style mixing 0.9,
G EMA of 5 kimg) and config-f (`preset: paper`, batch 32, R1 gamma 10), each in float32 and in mixed precision
(fp16 in the 4 highest-resolution blocks, conv_clamp 256): s/kimg and peak memory, beside the anchor
(stylegan2-ada-pytorch, 256x256 on one V100: 21.6-24.2 s/kimg; goal on one H100: <= 10 s/kimg). After the auto
config: its float32 step against the reference path (both under training's CUDA flags and, unlike the CPU
comparison's NCHW reference, both channels_last, the config's layout; alternating step by step, each step timed to
its end), then, unless --no-forms, the modulated convolutions of its G from 32 px
up in their forms, as on the CPU, in float32 under the flags training set on CUDA (cudnn.benchmark, TF32): whether
the form training uses is the faster one there. Then config-f. --profile: after the comparison, one
lazy-regularisation cycle of the auto config under torch.profiler: GPU kernel time a step against the step's wall
time, kernel launches and host syncs a step, the kernels that take the GPU's time and the operators that take the
host's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from facegan import ops
from facegan.config import TrainConfig
from facegan.models.stylegan2 import ModulatedConv2d, channels
from facegan.ops.conv import conv2d, no_weight_grads
from facegan.train.gan import GANTrainer
from facegan.train.stepper import runtime

AUTO_WIDTHS = {"channel_base": 16384, "channel_max": 512}  # stylegan2-ada's --cfg auto at 256 px
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
        "stylegan2": {**AUTO_WIDTHS, "mapping_layers": 2, "style_mixing": 0.9, **mixed},
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


def queued(t: GANTrainer, steps: int) -> None:
    """`steps` steps as the training loop runs them (a step's losses read during the next), then the last losses
    read and the device waited for."""
    for _ in range(steps):
        t.advance()
    t.settle()
    sync(t.device)


def interleaved(
    sides: dict[str, tuple[GANTrainer, bool]], rounds: int, steps: int, warmup: int | None = None
) -> dict[str, list[float]]:
    """Seconds per step of each side in each round of `steps` steps (whole lazy-regularisation cycles), after
    `warmup` steps per side (default: one cycle). Within a round the sides alternate step by step (ABC CBA order),
    each side's step i next to the other's step i, so a slow spell of a shared machine falls on both; a round's
    ratio is then stable to ~1% where whole-round turns varied by 10%."""
    out: dict[str, list[float]] = {k: [] for k in sides}

    def timed(t: GANTrainer, fast: bool) -> float:
        with ops.fast_ops(fast):
            sync(t.device)
            t0 = time.perf_counter()
            t.step()
            sync(t.device)
            return time.perf_counter() - t0

    for t, fast in sides.values():  # warm-up
        for _ in range(steps if warmup is None else warmup):
            timed(t, fast)
    for _ in range(rounds):
        if len(sides) == 1:  # one side (CUDA): the round as one block, steps queued back to back as in training
            ((name, (t, fast)),) = sides.items()
            with ops.fast_ops(fast):
                sync(t.device)
                t0 = time.perf_counter()
                queued(t, steps)
            out[name].append((time.perf_counter() - t0) / steps)
            continue
        total = dict.fromkeys(sides, 0.0)
        for i in range(steps):
            for name in list(sides) if i % 2 == 0 else list(sides)[::-1]:
                total[name] += timed(*sides[name])
        for name in sides:
            out[name].append(total[name] / steps)
    return out


def compared(times: dict[str, list[float]], ours: str, ref: str) -> tuple[dict[str, float], float, list[float]]:
    """Each side's median step time, the ratio ours / ref of the medians, and the per-round ratios."""
    med = {k: statistics.median(v) for k, v in times.items()}
    return med, med[ours] / med[ref], [f / r for f, r in zip(times[ours], times[ref], strict=True)]


def spread(per_round: list[float]) -> str:
    return f"per round: median {statistics.median(per_round):.3f}, range {min(per_round):.3f}-{max(per_round):.3f}"


def settings(cfg: TrainConfig, device: torch.device) -> str:
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, deterministic "
            f"{torch.are_deterministic_algorithms_enabled()}, cudnn.benchmark {torch.backends.cudnn.benchmark}, "
            f"TF32 {torch.backends.cuda.matmul.allow_tf32}, amp {cfg.amp}, device {device}")  # fmt: skip


def cpu_step(args: argparse.Namespace) -> dict[str, Any]:
    """The issue's ratio: facegan (facegan.ops, channels_last) against the path before it (plain ops, NCHW); and,
    so that the layout's share is seen apart from the ops', the same against the plain ops in channels_last (a
    setting either path can take: with it, the ratio is the ops' alone)."""
    with ops.fast_ops(False):
        reference = trainer(cpu_config(args.threads, channels_last=False), 64)
        reference_cl = trainer(cpu_config(args.threads, channels_last=True), 64)
    ours = trainer(cpu_config(args.threads, channels_last=True), 64)
    sides = {"reference": (reference, False), "reference_cl": (reference_cl, False), "facegan": (ours, True)}
    times = interleaved(sides, args.rounds, args.steps)
    med, ratio, per_round = compared(times, "facegan", "reference")
    _, ratio_cl, per_round_cl = compared(times, "facegan", "reference_cl")
    print("\n## CPU: `cpu` preset 64x64, batch 16, R1/16 + path length/4, mixing 0.9, EMA")
    print(settings(ours.cfg, ours.device))
    print(f"median of {args.rounds} rounds of {args.steps} steps, the three sides alternating step by step")
    print("reference (plain PyTorch ops, NCHW): " + f"{1000 * med['reference']:.1f} ms/step")
    print("reference (plain PyTorch ops, channels_last): " + f"{1000 * med['reference_cl']:.1f} ms/step")
    print("facegan (facegan.ops, channels_last): " + f"{1000 * med['facegan']:.1f} ms/step")
    print(f"ratio facegan / reference: {ratio:.3f}  (goal <= 0.7; the path before, NCHW); {spread(per_round)}")
    print(f"ratio facegan / reference in channels_last: {ratio_cl:.3f}  (the same layout: the ops' share alone); "
          f"{spread(per_round_cl)}")  # fmt: skip
    print("rounds (ms): " + "; ".join(f"{k} {[round(1000 * x) for x in v]}" for k, v in times.items()))
    return {"median_s": med, "rounds_s": times, "ratio": ratio, "per_round": per_round, "ratio_channels_last":
            ratio_cl, "per_round_channels_last": per_round_cl}  # fmt: skip


Form = Callable[[ModulatedConv2d, torch.Tensor, torch.Tensor], torch.Tensor]


def _scaled_input_conv(m: ModulatedConv2d, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """A 1x1 layer in the input-scaling form: scale x by the styles, one shared-weight convolution."""
    return conv2d(x * s.view(*s.shape, 1, 1), m.scale * m.weight[0])


FORMS_3X3: dict[str, Form] = {"input scaling": ModulatedConv2d._scaled, "grouped": ModulatedConv2d._fused}
FORMS_1X1: dict[str, Form] = {"input scaling": _scaled_input_conv, "batched matmul": ModulatedConv2d._scaled,
                              "grouped": ModulatedConv2d._fused}  # fmt: skip
TRAINING_FORM = {"3x3": "input scaling", "1x1": "batched matmul"}  # what ModulatedConv2d.undemodulated runs


def first(m: ModulatedConv2d, x: torch.Tensor, s: torch.Tensor, form: Form) -> None:
    y = form(m, x, m.modulation(s))
    y.backward(torch.ones_like(y))


def second(m: ModulatedConv2d, x: torch.Tensor, s: torch.Tensor, form: Form) -> None:
    """R1-like: the gradient w.r.t. the input, then the backward of its squared norm."""
    y = form(m, x, m.modulation(s))
    with no_weight_grads():
        (g,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
    g.pow(2).sum().backward()


# (resolution, in, out, kernel, upsample) of each modulated conv of a G, toRGB included
Layer = tuple[int, int, int, int, bool]
CPU_LAYERS: list[Layer] = [(8, 64, 64, 3, False), (16, 64, 64, 3, True), (16, 64, 64, 3, False), (32, 64, 64, 3, True),
                           (32, 64, 64, 3, False), (64, 64, 32, 3, True), (64, 32, 32, 3, False), (32, 64, 3, 1, False),
                           (64, 32, 3, 1, False)]  # fmt: skip  # the `cpu` preset at 64 px


def auto256_layers() -> list[Layer]:
    """stylegan2-ada's `auto` G at 256 px from 32 px up, where the time is: each resolution's upsampling conv and
    conv, then the toRGBs of the two highest, with the widths the model gives them."""
    ch = {r: channels(r, AUTO_WIDTHS["channel_base"], AUTO_WIDTHS["channel_max"]) for r in (16, 32, 64, 128, 256)}
    convs = [[(r, ch[r // 2], ch[r], 3, True), (r, ch[r], ch[r], 3, False)] for r in (32, 64, 128, 256)]
    return [*itertools.chain(*convs), *((r, ch[r], 3, 1, False) for r in (128, 256))]


def modconv_forms(layers: list[Layer], style_dim: int, device: torch.device, rounds: int,
                  batch: int = 16) -> list[dict[str, Any]]:  # fmt: skip
    """Each modulated conv of `layers`, channels_last as in training: each form forward + backward, and with a
    double backward, medians of interleaved rounds (on CUDA, each call timed to its end)."""
    print(f"\n## Modulated conv forms on {device} (batch {batch}, channels_last, ms, median of interleaved rounds)")
    print("| layer | form | forward + backward | with double backward |\n|---|---|---|---|")
    out = []
    for res, cin, cout, k, up in layers:
        m = ModulatedConv2d(cin, cout, k, style_dim, demodulate=k == 3, upsample=up).train().to(device)
        side = res // 2 if up else res
        x = torch.randn(batch, cin, side, side, device=device).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        s = torch.randn(batch, style_dim, device=device)
        forms = FORMS_3X3 if k == 3 else FORMS_1X1
        t: dict[tuple[str, str], list[float]] = {}
        for r in range(rounds + 2):  # two warm-up rounds
            for fn in (first, second):
                for name, form in forms.items():
                    sync(device)
                    t0 = time.perf_counter()
                    fn(m, x, s, form)
                    sync(device)
                    if r >= 2:
                        t.setdefault((fn.__name__, name), []).append(1000 * (time.perf_counter() - t0))
        layer = f"{res} px {'up ' if up else ''}{cin}->{cout}{' (toRGB)' if k == 1 else ''}"
        for name in forms:
            a, b = statistics.median(t["first", name]), statistics.median(t["second", name])
            used = " (training)" if name == TRAINING_FORM[f"{k}x{k}"] else ""
            print(f"| {layer} | {name}{used} | {a:.2f} | {b:.2f} |")
            out.append({"layer": layer, "form": name, "training": bool(used), "first_ms": a, "second_ms": b})
    return out


def gpu(args: argparse.Namespace, results: dict[str, Any], save: Callable[[], None], name: str) -> None:
    """s/kimg and peak memory of CUDA config `name` (of `gpu_configs`) in fp32 then fp16 blocks into `results`,
    calling `save` after each (a run cut short keeps what it finished), with the seconds its set-up, warm-up and
    timed rounds took (a lent GPU's minutes are few: the log says where they went). Warm-up: 2 steps (step 0 runs
    R1 and path length, step 1 neither, so cudnn.benchmark has tuned every shape; any 16 steps after them hold one
    R1 and four path-length steps, as a whole cycle does)."""
    for amp in ("off", "fp16"):
        cfg = gpu_configs(amp)[name]
        t0 = time.perf_counter()
        t = trainer(cfg, 256)
        sync(t.device)
        built = time.perf_counter() - t0
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        interleaved({name: (t, True)}, 0, args.steps, warmup=2)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        times = interleaved({name: (t, True)}, args.rounds, args.steps, warmup=0)[name]
        timed = time.perf_counter() - t0
        sec = statistics.median(times)
        kimg = sec / (cfg.batch_size / 1000)
        peak = torch.cuda.max_memory_allocated() / 2**30
        label = f"{name}, {'fp32' if amp == 'off' else 'fp16 in 4 blocks + clamp 256'}"
        print(
            f"{label:58s} {kimg:7.2f} s/kimg  ({cfg.batch_size / sec:6.1f} img/s, peak {peak:.1f} GiB; set-up "
            f"{built:.0f} s, warm-up {warm:.0f} s, {args.rounds} x {args.steps} steps {timed:.0f} s)",
            flush=True,
        )
        print(f"  settings: {settings(cfg, t.device)}", flush=True)
        results[label] = {"s_per_kimg": kimg, "peak_gib": peak, "settings": settings(cfg, t.device),
                          "seconds": {"set_up": built, "warm_up": warm, "timed": timed}}  # fmt: skip
        save()
        del t
        torch.cuda.empty_cache()


def cuda_reference(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Config `name` in float32: facegan.ops against the reference path on CUDA, as `cpu_step` compares them; with
    --profile, then facegan's step under torch.profiler (`cuda_profile`)."""
    cfg = gpu_configs("off")[name]
    with ops.fast_ops(False):
        reference = trainer(cfg, 256)
    ours = trainer(cfg, 256)
    times = interleaved({"reference": (reference, False), "facegan": (ours, True)}, args.rounds, args.steps, warmup=2)
    med, ratio, per_round = compared(times, "facegan", "reference")
    print(f"\n{name}, fp32, both channels_last, facegan.ops vs the reference path (alternating step by step, each "
          "timed to its end): "
          f"reference {1000 * med['reference']:.1f} ms/step, facegan {1000 * med['facegan']:.1f} ms/step; ratio "
          f"{ratio:.3f} ({spread(per_round)})", flush=True)  # fmt: skip
    out: dict[str, Any] = {"median_s": med, "ratio": ratio, "per_round": per_round}
    del reference
    torch.cuda.empty_cache()
    if args.profile:
        out["profile"] = cuda_profile(ours, args.steps, name)
    return out


def cuda_profile(t: GANTrainer, steps: int, name: str) -> dict[str, Any]:
    """One lazy-regularisation cycle of `t` timed (steps queued as in training), then one under torch.profiler,
    summarised by `profiling.profiled`: GPU busy, launches and host syncs a step, the top kernels and host ops."""
    from profiling import profiled  # a sibling script's module (runpy, as the tests load this file, adds no path)

    sec = statistics.median(interleaved({name: (t, True)}, 1, steps, warmup=0)[name])
    return profiled(lambda: queued(t, steps), steps, sec, f"{name}, fp32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    ap.add_argument("--steps", type=int, default=16, help="steps per round: whole lazy-regularisation cycles")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-forms", action="store_true", help="skip the per-layer modulated conv forms")
    ap.add_argument("--cuda-only", action="store_true", help="only the CUDA figures (a lent GPU's minutes are few)")
    ap.add_argument("--profile", action="store_true", help="CUDA: a profile of the auto config's step")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.cuda_only and not torch.cuda.is_available():
        ap.error("--cuda-only: no CUDA device on this machine")
    results: dict[str, Any] = {}
    if not args.cuda_only:
        results["cpu"] = cpu_step(args)
        if not args.no_forms:
            torch.set_num_threads(args.threads)
            results["forms"] = modconv_forms(CPU_LAYERS, 128, torch.device("cpu"), args.rounds)

    def save() -> None:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1, default=str)

    if torch.cuda.is_available():
        results["cuda"] = {}
        print(f"\n## CUDA: {torch.cuda.get_device_name()}; anchor: {ANCHOR}")
        auto, paper = list(gpu_configs("off"))  # the two configs' names
        gpu(args, results["cuda"], save, auto)
        results["cuda_reference"] = cuda_reference(args, auto)
        save()
        if not args.no_forms:  # after the auto figures, under the flags training set (cudnn.benchmark, TF32)
            results["cuda_forms"] = modconv_forms(auto256_layers(), 512, torch.device("cuda"), args.rounds)
            save()
        gpu(args, results["cuda"], save, paper)
    else:
        print("\nno CUDA device: the GPU figures (auto 256 and config-f, fp32 and mixed precision) are not measured")
    save()


if __name__ == "__main__":
    main()
