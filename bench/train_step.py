"""Step time of facegan's training loop vs a textbook DCGAN loop of the same architecture.

    python bench/train_step.py [--channels 32] [--batch 64] [--steps 15] [--device cpu|cuda]

Both train DCGAN 64x64 with the non-saturating loss and Adam, batch 64, on the same in-memory
uint8 images, in the same process, in alternating rounds. Prints the median step times and
their ratio (goal: ours / reference <= 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from facegan.config import TrainConfig
from facegan.train.gan import GANTrainer as Trainer


def reference_models(z_dim: int, ch: int) -> tuple[nn.Module, nn.Module]:
    """The PyTorch-examples DCGAN, written out plainly (64x64)."""
    g = nn.Sequential(
        nn.ConvTranspose2d(z_dim, ch * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ch * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ch * 8, ch * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ch * 4, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ch * 2, ch, 4, 2, 1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True),
        nn.ConvTranspose2d(ch, 3, 4, 2, 1, bias=False), nn.Tanh(),
    )
    d = nn.Sequential(
        nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ch * 2, ch * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 4), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ch * 4, ch * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 8), nn.LeakyReLU(0.2, True),
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
        float(loss_d), float(loss_g)  # the reference also reads its losses once per step


def timed(step, n: int, device: torch.device) -> list[float]:
    out = []
    for _ in range(n):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=TrainConfig().g_channels)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=15, help="timed steps per round (3 rounds each)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    images = torch.randint(0, 256, (2000, 3, 64, 64), dtype=torch.uint8)

    cfg = TrainConfig(g_channels=args.channels, d_channels=args.channels, batch_size=args.batch, mirror=False,
                      device=device.type)
    ours = Trainer(cfg, images, None, [], device)
    ref = Reference(images, cfg.z_dim, args.channels, args.batch, device)
    timed(ours.step, 3, device), timed(ref.step, 3, device)  # warm-up
    t_ours, t_ref = [], []
    for _ in range(3):
        t_ours += timed(ours.step, args.steps, device)
        t_ref += timed(ref.step, args.steps, device)
    mo, mr = statistics.median(t_ours), statistics.median(t_ref)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; DCGAN 64x64, channels {args.channels}, batch {args.batch}")
    print(f"facegan Trainer.step  median {mo * 1000:8.1f} ms")
    print(f"reference loop        median {mr * 1000:8.1f} ms")
    print(f"ratio ours/reference  {mo / mr:.3f}   (goal <= 1.05)")


if __name__ == "__main__":
    main()
