"""Gradient penalties on the DCGAN family's D: the training step with the penalty's pass through D convolving
through facegan.ops.conv (a backward made of convolutions, so the penalty's double backward is ordinary
convolutions; D's other passes are nn.Conv2d's either way) against the same step on PyTorch's nn.Conv2d
throughout (`facegan.ops.fast_ops(False)`: its generic convolution double backward).

    python bench/penalty_speed.py [--rounds 7] [--steps 16] [--threads 2] [--batch 64] [--device cpu|cuda]

64x64, the project's default widths (g_channels, d_channels 32), batch 64: WGAN-GP (penalty every D step,
n_critic 1 so a step is one D and one G update), DCGAN with R1 every step (gamma 10, d_norm none) and with R1
every 16 (the lazy default). Both sides in one process, the same threads and determinism (`stepper.runtime`),
alternating step by step; medians of the rounds and their ratio.
"""

from __future__ import annotations

import argparse

from stylegan2_speed import compared, interleaved, settings, spread, trainer

from facegan import ops
from facegan.config import TrainConfig

CASES = {
    "wgan-gp (GP every step)": {"model": "wgan-gp", "loss": "wgan-gp"},
    "dcgan + R1 every step": {"model": "dcgan", "d_norm": "none", "r1": {"gamma": 10.0, "every": 1}},
    "dcgan + R1 every 16": {"model": "dcgan", "d_norm": "none", "r1": {"gamma": 10.0, "every": 16}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    ap.add_argument("--steps", type=int, default=16, help="steps per round (16: whole lazy-R1 cycles)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: under training's CUDA flags")
    ap.add_argument(
        "--cases", nargs="+", choices=list(CASES), default=list(CASES), metavar="CASE", help=str(list(CASES))
    )
    args = ap.parse_args()
    print(f"# DCGAN-family D penalties, 64x64, batch {args.batch}: facegan.ops.conv vs nn.Conv2d")
    print(f"median of {args.rounds} rounds of {args.steps} steps, the two sides alternating step by step")
    for name in args.cases:
        case = CASES[name]
        cfg = TrainConfig.model_validate(
            {**case, "batch_size": args.batch, "device": args.device, "threads": args.threads}
        )
        with ops.fast_ops(False):
            plain = trainer(cfg, 64)
        ours = trainer(cfg, 64)
        times = interleaved({"nn.Conv2d": (plain, False), "facegan.ops": (ours, True)}, args.rounds, args.steps)
        med, ratio, per_round = compared(times, "facegan.ops", "nn.Conv2d")
        print(f"\n## {name}\n{settings(cfg, ours.device)}")
        print(f"nn.Conv2d {1000 * med['nn.Conv2d']:.1f} ms/step, facegan.ops {1000 * med['facegan.ops']:.1f} ms/step; "
              f"ratio {ratio:.3f} ({spread(per_round)})")  # fmt: skip


if __name__ == "__main__":
    main()
