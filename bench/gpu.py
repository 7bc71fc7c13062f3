"""DCGAN 64x64 training throughput on one device: mixed precision and CUDA-graph replay.

    python bench/gpu.py [--device cuda] [--rounds 5] [--steps 50] [--profile] [--json out.json]

The real training step as the training loop runs it (`Stepper.advance`: a step's losses are read during the next;
set up by `facegan.train.stepper.runtime` as `run_train` sets it up: `deterministic: auto` is cudnn.benchmark + TF32
on CUDA), DCGAN with 64 channels, batch 64: images/s (generator updates x batch / s), median of interleaved rounds,
for amp off / bf16 / fp16, eager and with `compile: reduce-overhead` (torch.compile + CUDA graphs: one replay per
network call instead of ~100 kernel launches); the float32 sides also with each step's losses read at its end (the
loop before 2026-12-04), in the same rounds. Goal on one H100: >= 24,000 img/s (4x the eager 6,000). --profile
(CUDA): after the rounds, one round of each float32 side under torch.profiler (`profiling.profiled`): GPU busy
against wall time, kernel launches and host syncs a step, the kernels and the host operators that take the time.
StyleGAN2 speed: bench/stylegan2_speed.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial

import torch

from facegan.config import TrainConfig
from facegan.errors import first_line
from facegan.train.gan import GANTrainer
from facegan.train.stepper import runtime


def trainer(cfg: TrainConfig) -> GANTrainer:
    dist, device = runtime(cfg)
    images = torch.randint(0, 256, (2048, 3, 64, 64), dtype=torch.uint8)
    return GANTrainer(cfg, images.pin_memory() if device.type == "cuda" else images, None, [], device, dist)


def steps(t: GANTrainer, n: int, read_each: bool = False) -> float:
    """Seconds for n steps as the training loop runs them (`advance`: a step's losses read during the next), or with
    `read_each` each step's losses read at its end (`step`, what the loop did before 2026-12-04)."""
    if t.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        t.advance(read_all=read_each)
    t.settle()
    if t.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50, help="steps per round")
    ap.add_argument("--amp", nargs="+", default=["off", "bf16", "fp16"])
    ap.add_argument("--compile", nargs="+", default=["off", "reduce-overhead"])
    ap.add_argument("--profile", action="store_true", help="CUDA: profile one round of each float32 side")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.profile and not args.device.startswith("cuda"):
        ap.error("--profile: the profile is of CUDA steps (--device cuda)")
    sides = {}
    for amp in args.amp:
        for mode in args.compile:
            cfg = TrainConfig(model="dcgan", g_channels=64, d_channels=64, batch_size=64, amp=amp, device=args.device,
                              compile=False if mode == "off" else mode)  # fmt: skip
            t = trainer(cfg)
            try:
                steps(t, 10)  # warm-up (compilation, graph capture)
            except Exception as e:  # a compiler missing on the machine must not cost the other figures
                if mode == "off":
                    raise
                print(f"amp {amp}, compile {mode}: failed, left out: {first_line(e, 300, with_type=True)}")
                continue
            sides[f"amp {amp}, compile {mode}"] = t
    if not sides:
        raise SystemExit("gpu.py: nothing to time (every --compile mode given failed to compile)")
    device = next(iter(sides.values())).device
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; cudnn.benchmark {torch.backends.cudnn.benchmark}, "
          f"TF32 {torch.backends.cuda.matmul.allow_tf32}; DCGAN 64x64, 64 channels, batch 64; "
          f"median of {args.rounds} interleaved rounds of {args.steps} steps")  # fmt: skip
    # float32 sides also with each step's losses read at its end: what reading them a step later is worth
    each = {k: f"{k}, losses read each step" for k in sides if k.startswith("amp off")}
    secs: dict[str, list[float]] = {k: [] for k in (*sides, *each.values())}
    report: dict = {"device": name, "torch": torch.__version__}

    def save() -> None:  # after each part: a run cut short keeps what it finished
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)

    for r in range(args.rounds):
        for k, t in sides.items():
            secs[k].append(steps(t, args.steps))
            if k in each:
                secs[each[k]].append(steps(t, args.steps, read_each=True))
        report |= {"rounds": r + 1, "img_per_s": {k: args.steps * 64 / statistics.median(v) for k, v in secs.items()}}
        save()
    for k, rate in report["img_per_s"].items():
        print(f"{k:60s} {rate:10.1f} img/s")
    if args.profile:
        from profiling import profiled  # a sibling script's module, as stylegan2_speed.py takes it

        report["profile"] = {}
        for k, t in sides.items():
            if k.startswith("amp off"):  # eager and reduce-overhead, float32
                wall = statistics.median(secs[k]) / args.steps
                report["profile"][k] = profiled(partial(steps, t, args.steps), args.steps, wall, f"DCGAN 64x64, {k}")
                save()


if __name__ == "__main__":
    main()
