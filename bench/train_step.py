"""Step time of facegan's training loop vs a textbook DCGAN loop of the same architecture.

    python bench/train_step.py [--channels 32] [--batch 64] [--steps 15] [--rounds 7] [--threads 0] [--device cpu|cuda]

Both train DCGAN 64x64 with the non-saturating loss and Adam, batch 64, on the same in-memory uint8 images,
in the same process, under the settings `run_train` applies (`facegan.train.stepper.runtime`: threads,
determinism, allocator), in interleaved rounds. facegan's steps run as its loop runs them (`Stepper.advance`: a
step's losses are read during the next); the textbook loop reads its losses at the end of each step, as such loops
do to print them. Prints the median step times and their ratio (goal: ours / reference <= 1.05); on CUDA also
facegan with `compile: reduce-overhead` (a CUDA graph per network call) and with `graph: true` (the whole step one
CUDA graph).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from facegan.config import TrainConfig
from facegan.errors import first_line
from facegan.train.gan import GANTrainer as Trainer
from facegan.train.stepper import runtime


def reference_models(z_dim: int, ch: int) -> tuple[nn.Module, nn.Module]:
    """The PyTorch-examples DCGAN, written out plainly (64x64)."""
    g = nn.Sequential(
        nn.ConvTranspose2d(z_dim, ch * 8, 4, 1, 0, bias=False),
        nn.BatchNorm2d(ch * 8),
        nn.ReLU(True),
        nn.ConvTranspose2d(ch * 8, ch * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ch * 4),
        nn.ReLU(True),
        nn.ConvTranspose2d(ch * 4, ch * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ch * 2),
        nn.ReLU(True),
        nn.ConvTranspose2d(ch * 2, ch, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ch),
        nn.ReLU(True),
        nn.ConvTranspose2d(ch, 3, 4, 2, 1, bias=False),
        nn.Tanh(),
    )
    d = nn.Sequential(
        nn.Conv2d(3, ch, 4, 2, 1),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ch * 2),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(ch * 2, ch * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ch * 4),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(ch * 4, ch * 8, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ch * 8),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(ch * 8, 1, 4, 1, 0, bias=False),
    )
    return g, d


class Reference:
    def __init__(self, images: torch.Tensor, z_dim: int, ch: int, batch: int, device: torch.device):
        self.images, self.z_dim, self.batch, self.device = images, z_dim, batch, device
        torch.manual_seed(0)
        self.g, self.d = (m.to(device) for m in reference_models(z_dim, ch))
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def step(self) -> None:
        idx = torch.randint(len(self.images), (self.batch,))
        real = self.images[idx].to(self.device).float().div(127.5).sub(1)
        z = torch.randn(self.batch, self.z_dim, 1, 1, device=self.device)
        fake = self.g(z)
        loss_d = F.softplus(-self.d(real)).mean() + F.softplus(self.d(fake.detach())).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        loss_g = F.softplus(-self.d(fake)).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        float(loss_d.detach()), float(loss_g.detach())  # the reference also reads its losses once per step


def timed(step, n: int, device: torch.device) -> float:
    """Seconds per step over n steps."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=TrainConfig().g_channels)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=15, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    ap.add_argument("--threads", type=int, nargs="+", default=[0], help="torch CPU thread counts to time (0 = default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    images = torch.randint(0, 256, (2000, 3, 64, 64), dtype=torch.uint8)
    sides = {}
    # (compile, graph, the side's name suffix)
    modes = [(False, False, "")]
    if args.device.startswith("cuda"):
        modes += [("reduce-overhead", False, " (compile reduce-overhead)"), (False, True, " (graph)")]
    for mode, graph, suffix in modes:
        cfg = TrainConfig(g_channels=args.channels, d_channels=args.channels, batch_size=args.batch, mirror=False,
                          device=args.device, compile=mode, graph=graph)  # fmt: skip
        dist, device = runtime(cfg)  # the determinism and allocator run_train sets (both sides run under them)
        t = Trainer(cfg, images, None, [], device, dist)
        name = "facegan GANTrainer.step" + suffix
        try:
            timed(t.advance, 5, device)  # warm-up (compilation, the graph's capture)
        except Exception as e:  # a compiler missing on the machine must not cost the eager figures
            if not suffix:
                raise
            print(f"{name}: failed, left out: {first_line(e, 300, with_type=True)}")
            continue
        sides[name] = t.advance
    ref = Reference(images, cfg.z_dim, args.channels, args.batch, device)
    timed(ref.step, 5, device)  # warm-up
    sides["reference loop"] = ref.step
    default_threads = torch.get_num_threads()
    threads = [n or default_threads for n in args.threads]
    secs: dict[tuple[int, str], list[float]] = {(n, k): [] for n in threads for k in sides}
    for _ in range(args.rounds):
        for n in threads:
            torch.set_num_threads(n)
            for k, step in sides.items():
                secs[n, k].append(timed(step, args.steps, device))
    med = {k: statistics.median(v) for k, v in secs.items()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; deterministic {torch.are_deterministic_algorithms_enabled()}, "
          f"cudnn.benchmark {torch.backends.cudnn.benchmark}, TF32 {torch.backends.cuda.matmul.allow_tf32}; "
          f"DCGAN 64x64, channels {args.channels}, batch {args.batch}; "
          f"median of {args.rounds} interleaved rounds of {args.steps} steps")  # fmt: skip
    for (n, k), v in med.items():
        print(f"{n} thread(s)  {k:44s} {v * 1000:8.2f} ms/step  {args.batch / v:9.1f} img/s")
    for n in threads:
        ref_s = med[n, "reference loop"]
        for k in sides:
            if k != "reference loop":
                goal = "   (goal <= 1.05)" if k == "facegan GANTrainer.step" else ""
                print(f"{n} thread(s)  ratio {k} / reference: {med[n, k] / ref_s:.3f}{goal}")
    if len(threads) > 1:
        k = next(iter(sides))
        print(f"{k}: {threads[-1]} threads vs {threads[0]}: {med[threads[0], k] / med[threads[-1], k]:.2f}x img/s")


if __name__ == "__main__":
    main()
