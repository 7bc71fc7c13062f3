"""The training loop: one loop for every model and loss in the registries.

Randomness per step (batch order, flips, noise) is derived from (seed, step) alone, so a run
resumed from any checkpoint continues exactly as the uninterrupted run would have (bitwise on CPU).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from facegan.config import TrainConfig
from facegan.data.pack import ZIP_NAME, load_packed
from facegan.io import image_grid, write_image, write_text
from facegan.losses import get_loss
from facegan.models import build_models
from facegan.train.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOSS_FIELDS = ["step", "loss_d", "loss_g", "d_real", "d_fake"]
N_FIXED = 64


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    steps: int
    seconds: float
    losses: list[dict[str, float]]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(name)


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def batch_indices(n: int, batch: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the step's batch: epochs are seeded permutations, so no sampler state is needed."""
    out: list[torch.Tensor] = []
    pos, need = step * batch, batch
    while need:
        epoch, off = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7_919 + epoch))
        take = min(need, n - off)
        out.append(perm[off : off + take])
        pos, need = pos + take, need - take
    return torch.cat(out)


def fixed_noise(cfg: TrainConfig, n: int = N_FIXED) -> torch.Tensor:
    return torch.randn(n, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 99_991))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return (x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())


@torch.no_grad()
def sample_grid(g: torch.nn.Module, z: torch.Tensor, device: torch.device) -> np.ndarray:
    was = g.training
    g.eval()
    images = to_uint8(g(z.to(device)))
    g.train(was)
    return image_grid(images, ncols=int(np.ceil(np.sqrt(len(images)))))


def run_train(cfg: TrainConfig, packed: Path, dst: Path, resume: bool = True) -> TrainResult:
    """Train cfg.model on packed/dataset.zip; write checkpoint, sample grids and loss log to dst."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = resolve_device(cfg.device)
    images, _, meta = load_packed(packed / ZIP_NAME)
    data = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    n, resolution = len(data), int(meta["resolution"])
    log.info("training %s (%s loss) on %d images at %dx%d, %d steps, device %s",
             cfg.model, cfg.loss, n, resolution, resolution, cfg.steps, device)

    torch.manual_seed(cfg.seed)
    g, d = build_models(cfg, resolution)
    g, d = g.to(device), d.to(device)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    loss = get_loss(cfg.loss)
    z_fixed = fixed_noise(cfg)

    ckpt_path = dst / CHECKPOINT
    start, history = 0, []
    if resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        if state["config"] != cfg.model_dump(mode="json"):
            raise ValueError(f"{ckpt_path} was written with a different train config; remove it or restore the config")
        g.load_state_dict(state["G"])
        d.load_state_dict(state["D"])
        opt_g.load_state_dict(state["opt_G"])
        opt_d.load_state_dict(state["opt_D"])
        torch.set_rng_state(state["rng_torch"])
        start, history = int(state["step"]), list(state["losses"])
        log.info("resumed from %s at step %d", ckpt_path, start)

    def checkpoint(step: int) -> None:
        save_checkpoint(ckpt_path, {
            "step": step, "G": g.state_dict(), "D": d.state_dict(), "opt_G": opt_g.state_dict(),
            "opt_D": opt_d.state_dict(), "config": cfg.model_dump(mode="json"), "resolution": resolution,
            "rng_torch": torch.get_rng_state(), "losses": history, "label_values": meta.get("label_values", {}),
        })

    g.train()
    d.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train", unit="step", dynamic_ncols=True)
    for step in bar:
        gen = step_generator(cfg.seed, step)
        real = data[batch_indices(n, cfg.batch_size, step, cfg.seed)].to(device).float().div(127.5).sub(1)
        if cfg.mirror:
            flip = torch.rand(len(real), generator=gen) < 0.5
            real = torch.where(flip.to(device)[:, None, None, None], real.flip(3), real)
        z = torch.randn(len(real), cfg.z_dim, generator=gen).to(device)

        fake = g(z)
        d_real, d_fake = d(real), d(fake.detach())
        loss_d = loss.d(d_real, d_fake)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        loss_g = loss.g(d(fake))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

        values = torch.stack([loss_d, loss_g, d_real.mean(), d_fake.mean()]).detach().cpu().tolist()
        history.append({"step": step + 1, **dict(zip(LOSS_FIELDS[1:], values))})
        if not np.isfinite([history[-1]["loss_d"], history[-1]["loss_g"]]).all():
            checkpoint(step + 1)
            raise FloatingPointError(f"non-finite loss at step {step + 1}: {history[-1]} (checkpoint kept at {ckpt_path})")
        bar.set_postfix(loss_d=f"{history[-1]['loss_d']:.3f}", loss_g=f"{history[-1]['loss_g']:.3f}", refresh=False)
        done = step + 1
        if done % cfg.sample_every == 0 or done == cfg.steps:
            write_image(dst / "progress" / f"step{done:07d}.png", sample_grid(g, z_fixed, device))
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            checkpoint(done)
    bar.close()
    seconds = time.perf_counter() - t0

    write_image(dst / "samples.png", sample_grid(g, z_fixed, device))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, LOSS_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text(dst / "losses.csv", buf.getvalue())
    log.info("trained %d steps in %.1f s (%.3f s/step)", cfg.steps - start, seconds, seconds / max(1, cfg.steps - start))
    return TrainResult(ckpt_path, cfg.steps, seconds, history)
