"""DCGAN 64x64 training throughput on one device: mixed precision and CUDA-graph replay.

    python bench/gpu.py [--device cuda] [--rounds 5] [--steps 50] [--amp off bf16 fp16]
                        [--modes off reduce-overhead graph graph+default] [--profile] [--json out.json]

The real training step as the training loop runs it (`Stepper.advance`: a step's losses are read during the next;
set up by `facegan.train.stepper.runtime` as `run_train` sets it up: `deterministic: auto` is cudnn.benchmark + TF32
on CUDA), DCGAN with 64 channels, batch 64: images/s (generator updates x batch / s), median of interleaved rounds,
for amp off / bf16 / fp16, each in the modes asked for: `off` (eager), `reduce-overhead` (`compile: reduce-overhead`:
torch.compile + CUDA graphs, one replay per network call instead of ~100 kernel launches), `default` (`compile: true`),
`graph` (`graph: true`: the whole step, both updates, Adam and EMA, one CUDA graph of the eager kernels) and
`graph+default` (both: torch.compile's kernels in one graph a step). fp16 does not go with `graph` (its gradient
scaler decides on the host): left out with the reason. The float32 sides also with each step's losses read at its
end (the loop before 2026-12-04), in the same rounds. Goal on one H100: >= 24,000 img/s (4x the eager 6,000).
--profile (CUDA): after the rounds, one round of each float32 side under torch.profiler (`profiling.profiled`): GPU
busy against wall time, kernel launches and host syncs a step, the kernels and the host operators that take the time.
StyleGAN2 speed: bench/stylegan2_speed.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial

import torch
from pydantic import ValidationError

from facegan.config import TrainConfig
from facegan.errors import first_line
from facegan.train.gan import GANTrainer
from facegan.train.stepper import runtime

MODES = {  # --modes: (train.compile, train.graph, the side's name)
    "off": (False, False, "compile off"),
    "reduce-overhead": ("reduce-overhead", False, "compile reduce-overhead"),
    "default": ("default", False, "compile default"),
    "graph": (False, True, "graph"),
    "graph+default": ("default", True, "graph + compile default"),
}


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
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=["off", "reduce-overhead", "graph"])
    ap.add_argument("--profile", action="store_true", help="CUDA: profile one round of each float32 side")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.profile and not args.device.startswith("cuda"):
        ap.error("--profile: the profile is of CUDA steps (--device cuda)")
    sides = {}
    for amp in args.amp:
        for mode in args.modes:
            compile_, graph, label = MODES[mode]
            name = f"amp {amp}, {label}"
            try:
                cfg = TrainConfig(model="dcgan", g_channels=64, d_channels=64, batch_size=64, amp=amp,
                                  device=args.device, compile=compile_, graph=graph)  # fmt: skip
            except ValidationError as e:  # fp16 with graph
                print(f"{name}: left out: {e.errors()[0]['msg']}")
                continue
            t = trainer(cfg)
            try:
                steps(t, 10)  # warm-up (compilation, graph capture)
            except Exception as e:  # a compiler missing on the machine must not cost the other figures
                if mode == "off":
                    raise
                print(f"{name}: failed, left out: {first_line(e, 300, with_type=True)}")
                continue
            sides[name] = t
    if not sides:
        raise SystemExit("gpu.py: nothing to time (every --modes side given failed)")
    device = next(iter(sides.values())).device
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; {torch.get_num_threads()} threads; deterministic "
          f"{torch.are_deterministic_algorithms_enabled()}, cudnn.benchmark {torch.backends.cudnn.benchmark}, "
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
            if k.startswith("amp off"):  # every float32 side
                wall = statistics.median(secs[k]) / args.steps
                report["profile"][k] = profiled(partial(steps, t, args.steps), args.steps, wall, f"DCGAN 64x64, {k}")
                save()


if __name__ == "__main__":
    main()
