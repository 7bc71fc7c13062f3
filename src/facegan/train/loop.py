"""The training loop: one loop for every model and loss in the registries.

Randomness per step (batches, flips, noise, fake labels, augmentations) is derived from
(seed, step) alone, so a run resumed from any checkpoint continues exactly as the uninterrupted
run would have (bitwise on CPU).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from facegan.augment.ada import AdaptiveAugment
from facegan.augment.diffaugment import diff_augment
from facegan.config import TrainConfig
from facegan.data.pack import ZIP_NAME, load_packed
from facegan.io import write_text
from facegan.losses import get_loss
from facegan.models import build_models
from facegan.models.acgan import aux_loss
from facegan.models.transfer import apply_pretrained
from facegan.train.checkpoint import load_checkpoint, save_checkpoint
from facegan.train.dist import Dist, setup, teardown
from facegan.train.ema import EMA
from facegan.train.freeze import freeze_discriminator

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
LOSS_FIELDS = ["step", "loss_d", "loss_g", "d_real", "d_fake", "penalty", "aux_d", "aux_g", "r1", "path_length"]


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


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> floats in [-1, 1] (the inverse of to_uint8's scaling)."""
    return x.float().div(127.5).sub(1)


def seeded_subset(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n images picked by a permutation fixed by `seed` (all of them when there are fewer)."""
    return images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class Stepper:
    """Plumbing every trainer shares: device, DDP and torch.compile wrapping, mixed precision with grad scaling,
    seeded batches, the step counter and loss history, and the matching part of the checkpoint."""

    fields: list[str] = LOSS_FIELDS  # columns of losses.csv

    def __init__(self, device: torch.device, dist: Dist, *, batch_size: int, seed: int, mirror: bool, amp: str,
                 channels_last: bool, compile: bool):
        if batch_size % dist.world:
            raise ValueError(f"the batch size {batch_size} (the global batch) is not divisible by the "
                             f"{dist.world} processes")
        self.device, self.dist = device, dist
        self.batch_size, self.seed, self.mirror, self.compile = batch_size, seed, mirror, compile
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.amp_dtype = AMP_DTYPES[amp] if device.type == "cuda" else None
        if amp != "off" and self.amp_dtype is None:
            log.warning("amp=%s applies to CUDA only: training in float32 on %s", amp, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.step_done = 0
        self.history: list[dict[str, float]] = []

    def _channels_last(self, *modules: nn.Module) -> None:
        if self.memory_format is torch.channels_last:
            for p in (p for m in modules for p in m.parameters()):
                if p.dim() == 4:  # conv weights (StyleGAN2's modulated weights are 5-D and stay as they are)
                    p.data = p.data.contiguous(memory_format=torch.channels_last)

    def _wrap(self, module: nn.Module, broadcast_buffers: bool = True) -> nn.Module:
        """What forward passes go through: DDP across processes, then torch.compile, as configured.

        G's buffers (StyleGAN2's w_avg, BN statistics) are averaged over ranks after each step instead of
        broadcast from rank 0: the running average then equals the single-process one over the global batch.
        """
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=ids, broadcast_buffers=broadcast_buffers)
        if not self.compile:
            return module
        import torch._inductor.config as inductor

        inductor.layout_optimization = False  # its NHWC re-layout broke conv backward (torch 2.11, H100)
        return torch.compile(module)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)

    def _update(self, loss: torch.Tensor, *opts: torch.optim.Optimizer) -> None:
        """backward + step of each optimiser, through the fp16 gradient scaler when it is on."""
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for opt in opts:
            self.scaler.step(opt)
        self.scaler.update()

    def _batch(self, images: torch.Tensor, index: int, gen: torch.Generator, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(this process's rows of batch `index` of `images` as floats in [-1, 1], their indices)."""
        idx = self.dist.shard(batch_indices(len(images), self.batch_size, index, seed))
        x = images[idx].to(self.device, non_blocking=True).float().div_(127.5).sub_(1)
        x = x.contiguous(memory_format=self.memory_format)
        if self.mirror:
            flip = self.dist.shard(torch.rand(self.batch_size, generator=gen) < 0.5).to(self.device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x, idx

    def _record(self, names: list[str], values: list[torch.Tensor], **extra: float) -> dict[str, float]:
        """Append the step's losses to the history (raises on a non-finite one) and count the step."""
        vals = torch.stack([v.detach().float() for v in values]).cpu()
        self.step_done += 1
        row = {"step": self.step_done, **dict(zip(names, vals.tolist())), **extra}
        self.history.append(row)
        if not torch.isfinite(vals).all():
            raise FloatingPointError(f"non-finite loss at step {self.step_done}: {row}")
        return row

    @property
    def kimg(self) -> float:
        return self.step_done * self.batch_size / 1000

    def _state(self) -> dict:
        return {"step": self.step_done, "kimg": self.kimg, "scaler": self.scaler.state_dict(),
                "rng_torch": torch.get_rng_state(), "losses": self.history}

    def _load_state(self, state: dict) -> None:
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_torch"])
        self.step_done, self.history = int(state["step"]), list(state["losses"])


class ModelTrainer(Stepper):
    """A G (the sampler: z -> image) and a second net D trained on one packed dataset (`train` params)."""

    def __init__(self, cfg: TrainConfig, images: torch.Tensor, labels: torch.Tensor | None,
                 label_dims: list[int], device: torch.device, dist: Dist = Dist(),
                 label_names: list[str] | None = None, label_values: dict[str, list[str]] | None = None):
        super().__init__(device, dist, batch_size=cfg.batch_size, seed=cfg.seed, mirror=cfg.mirror, amp=cfg.amp,
                         channels_last=cfg.channels_last, compile=cfg.compile)
        self.cfg = cfg
        self.images = images  # (N, 3, R, R) uint8, on CPU (or pinned)
        self.labels = labels if cfg.conditional else None
        self.label_dims = label_dims if cfg.conditional else []
        self.label_names, self.label_values = label_names or [], label_values or {}
        self.resolution = images.shape[-1]
        torch.manual_seed(cfg.seed)
        g, d = build_models(cfg, self.resolution, self.label_dims)
        self.g, self.d = g.to(device).train(), d.to(device).train()
        self.ema = EMA(self.g, cfg.ema) if cfg.ema > 0 else None
        self._prepare()
        self._channels_last(self.g, self.d)
        self.g_run, self.d_run = self._wrap(self.g, broadcast_buffers=False), self._wrap(self.d)
        self.opt_g, self.opt_d = self._optimizers()

    def _prepare(self) -> None:
        """Changes to the fresh networks before they are wrapped and optimised (transfer, FreezeD)."""

    def _optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        return self._optimizer(self.g, self.cfg.lr_g), self._optimizer(self.d, self.cfg.lr_d)

    def _optimizer(self, module: nn.Module, lr: float, lazy_every: int = 0) -> torch.optim.Optimizer:
        """Adam/RMSprop over the trainable parameters; lazy regularisation rescales lr and betas (StyleGAN2)."""
        params = [p for p in module.parameters() if p.requires_grad]
        c = lazy_every / (lazy_every + 1) if lazy_every else 1.0
        if self.cfg.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr * c)
        return torch.optim.Adam(params, lr=lr * c, betas=(self.cfg.beta1**c, self.cfg.beta2**c))

    @property
    def sampler(self) -> torch.nn.Module:
        """The generator to sample from: the EMA copy when enabled."""
        return self.ema.model if self.ema else self.g

    def _real(self, index: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, idx = self._batch(self.images, index, gen, self.cfg.seed)
        y = self.labels[idx].to(self.device) if self.labels is not None else None
        return x, y

    def _after_step(self) -> None:
        """G's buffers averaged over processes, then its EMA updated."""
        if self.dist.active:
            with torch.no_grad():
                for buf in self.g.buffers():
                    if buf.is_floating_point():
                        buf.copy_(self.dist.mean(buf))
        if self.ema:
            self.ema.update(self.g)

    def write_samples(self, path: Path, final: bool = False) -> None:
        from facegan.sample import write_training_samples

        write_training_samples(self, path, final, self.label_names, self.label_values)

    def state_dict(self, label_names: list[str] | None = None, label_values: dict[str, list[str]] | None = None) -> dict:
        return {
            **self._state(), "G": self.g.state_dict(), "D": self.d.state_dict(),
            "G_ema": self.ema.model.state_dict() if self.ema else None,
            "opt_G": self.opt_g.state_dict(), "opt_D": self.opt_d.state_dict(),
            "config": self.cfg.model_dump(mode="json"), "resolution": self.resolution, "label_dims": self.label_dims,
            "label_names": self.label_names if label_names is None else label_names,
            "label_values": self.label_values if label_values is None else label_values,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["config"] != self.cfg.model_dump(mode="json"):
            raise ValueError("the checkpoint was written with a different train config; remove it or restore the config")
        self.g.load_state_dict(state["G"])
        self.d.load_state_dict(state["D"])
        if self.ema:
            self.ema.model.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_G"])
        self.opt_d.load_state_dict(state["opt_D"])
        self._load_state(state)


class Trainer(ModelTrainer):
    """GANs: G, D, their losses, augmentation (DiffAugment / ADA), R1 and path length, and one `step()`."""

    def _prepare(self) -> None:
        cfg = self.cfg
        self.style = cfg.stylegan2 if cfg.model == "stylegan2" else None
        self.pretrained = (apply_pretrained(cfg.init_from, self.g, self.d, self.ema.model if self.ema else None, cfg.model)
                           if cfg.init_from else None)
        self.frozen = freeze_discriminator(self.d, cfg.freeze_d)
        if self.frozen:
            log.info("FreezeD: %d discriminator parameters frozen (first %d blocks)", len(self.frozen), cfg.freeze_d)
        self.loss = get_loss(cfg.loss)
        self.augment = build_augment(cfg)
        self.ada = self.augment if isinstance(self.augment, AdaptiveAugment) else None  # the stateful one
        if self.ada:
            self.ada.reduce = self.dist.all_sum
            if self.pretrained and self.pretrained.get("ada_p") is not None:
                self.ada.p = float(self.pretrained["ada_p"])  # keep the augmentation strength of the source run
        if self.ada:
            self.fields = LOSS_FIELDS + ["ada_p"]
        self.pl_mean = torch.zeros((), device=self.device)

    def _optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        r1_every = self.style.r1_every if self.style and self.style.r1_gamma else 0
        pl_every = self.style.pl_every if self.style and self.style.pl_weight else 0
        return self._optimizer(self.g, self.cfg.lr_g, pl_every), self._optimizer(self.d, self.cfg.lr_d, r1_every)

    def _latents(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents (and labels) of a global batch of n, cut to this process's rows."""
        z = self.dist.shard(torch.randn(n, self.cfg.z_dim, generator=gen)).to(self.device)
        y = None
        if self.labels is not None:  # fake labels follow the real joint label distribution
            y = self.labels[self.dist.shard(torch.randint(len(self.labels), (n,), generator=gen))].to(self.device)
        return z, y

    def _fake(self, z: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator, **kw) -> torch.Tensor:
        if self.style:  # noise from the step's generator, style mixing
            n = len(z) * self.dist.world
            kw |= self.g.mixing_kwargs(n, self.style.style_mixing, gen, self.device, self.dist.shard)
            return self.g_run(z, y, **kw)
        return self.g_run(z, y) if self.label_dims else self.g_run(z)

    def _augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.augment(x, gen) if self.augment else x

    def _r1(self, real: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        """R1: squared gradient norm of D at (augmented) real images."""
        x = real.detach().requires_grad_(True)
        out, _ = self.d_run(self._augment(x, gen), y)
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        # + 0 * out: every D parameter is in the graph (DDP expects a gradient for each, even if zero)
        return grad.pow(2).flatten(1).sum(1).mean() + 0 * out.sum()

    def _path_length(self, gen: torch.Generator) -> torch.Tensor:
        """Path-length penalty: deviation of |J_w^T y| from its running mean (StyleGAN2)."""
        world = self.dist.world
        z, y = self._latents(max(world, self.cfg.batch_size // 2 // world * world), gen)
        fake, w = self._fake(z, y, gen, return_w=True)
        noise = self.dist.shard(torch.randn(len(fake) * world, *fake.shape[1:], generator=gen)).to(fake)
        noise = noise / math.sqrt(fake.shape[2] * fake.shape[3])
        (grad,) = torch.autograd.grad((fake * noise).sum(), w, create_graph=True)
        lengths = grad.pow(2).sum(2).mean(1).sqrt()
        self.pl_mean = self.pl_mean.lerp(self.dist.mean(lengths.mean()), 0.01)
        return (lengths - self.pl_mean).pow(2).mean() + 0 * fake.sum()  # + 0 * fake: as in _r1

    def step(self) -> dict[str, float]:
        """n_critic D updates (+ lazy R1), then one G update (+ lazy path-length), reusing the last D update's fakes."""
        cfg, loss, step = self.cfg, self.loss, self.step_done
        gen = step_generator(cfg.seed, step)
        # augmentations differ per process (their images differ); a single process keeps one stream
        aug = gen if not self.dist.active else step_generator(cfg.seed + 104_729 * (self.dist.rank + 1), step)
        zero = torch.zeros((), device=self.device)
        for k in range(cfg.n_critic):
            real, y_real = self._real(step * cfg.n_critic + k, gen)
            z, y_fake = self._latents(cfg.batch_size, gen)
            last = k == cfg.n_critic - 1
            with torch.set_grad_enabled(last), self._autocast():
                fake = self._fake(z, y_fake, gen)
            with self._autocast():
                adv_real, aux_real = self.d_run(self._augment(real, aug), y_real)
                adv_fake, aux_fake = self.d_run(self._augment(fake.detach(), aug), y_fake)
                loss_d = loss.d(adv_real.float(), adv_fake.float())
                aux_d = (aux_loss(aux_real, y_real, cfg.aux_head) + aux_loss(aux_fake, y_fake, cfg.aux_head)) / 2 \
                    if self.label_dims else zero
            if self.ada:
                self.ada.observe(adv_real, step * cfg.n_critic + k)
            penalty = loss.penalty(self.d_run, real, fake, y_real, gen, cfg) if loss.penalty else zero
            self._update(loss_d + penalty + cfg.aux_weight * aux_d, self.opt_d)
            if loss.clip:
                with torch.no_grad():
                    for p in self.d.parameters():
                        p.clamp_(-cfg.clip, cfg.clip)
        r1 = zero
        if self.style and self.style.r1_gamma and step % self.style.r1_every == 0:
            r1 = self._r1(real, y_real, aug)
            self._update(self.style.r1_gamma / 2 * r1 * self.style.r1_every, self.opt_d)

        with self._autocast():
            adv_gen, aux_gen = self.d_run(self._augment(fake, aug), y_fake)
            loss_g = loss.g(adv_gen.float())
            aux_g = aux_loss(aux_gen, y_fake, cfg.aux_head) if self.label_dims else zero
        self._update(loss_g + cfg.aux_weight * aux_g, self.opt_g)
        pl = zero
        if self.style and self.style.pl_weight and step % self.style.pl_every == 0:
            pl = self._path_length(gen)
            self._update(self.style.pl_weight * self.style.pl_every * pl, self.opt_g)
        self._after_step()
        values = [loss_d, loss_g, adv_real.float().mean(), adv_fake.float().mean(), penalty, aux_d, aux_g, r1, pl]
        return self._record(LOSS_FIELDS[1:], values, **({"ada_p": self.ada.p} if self.ada else {}))


    def state_dict(self, label_names: list[str] | None = None, label_values: dict[str, list[str]] | None = None) -> dict:
        return {**super().state_dict(label_names, label_values), "augment": self.ada.state_dict() if self.ada else None,
                "pl_mean": self.pl_mean.cpu()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.ada:
            self.ada.load_state_dict(state["augment"])
        self.pl_mean = state["pl_mean"].to(self.device)


class VAETrainer(ModelTrainer):
    """Model `vae`: the encoder sits in D's place, the decoder in G's; one update of both per step."""

    fields = ["step", "loss", "recon_mse", "kl", "kl_weight"]

    def kl_weight(self, step: int) -> float:
        v = self.cfg.vae
        return v.kl_weight * min(1.0, (step + 1) / v.kl_warmup) if v.kl_warmup else v.kl_weight

    def encode(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z, mu, logvar): z sampled with the reparameterisation trick, noise from `gen`."""
        from facegan.models.vae import reparameterize

        mu, logvar = self.d_run(x)
        eps = self.dist.shard(torch.randn(len(x) * self.dist.world, mu.shape[1], generator=gen)).to(mu)
        return reparameterize(mu, logvar, eps), mu, logvar

    def step(self) -> dict[str, float]:
        from facegan.models.vae import kl_divergence

        step = self.step_done
        gen = step_generator(self.cfg.seed, step)
        real, _ = self._real(step, gen)
        beta = self.kl_weight(step)
        with self._autocast():
            z, mu, logvar = self.encode(real, gen)
            recon = self.g_run(z).float()
        sse = (recon - real).pow(2).flatten(1).sum(1).mean()  # Gaussian decoder: squared error per image
        kl = kl_divergence(mu.float(), logvar.float())
        loss = sse + beta * kl
        self._update(loss, self.opt_g, self.opt_d)
        self._after_step()
        return self._record(self.fields[1:4], [loss, sse / real[0].numel(), kl], kl_weight=beta)

    def write_samples(self, path: Path, final: bool = False) -> None:
        super().write_samples(path, final)
        if final:
            from facegan.sample import write_vae_figures

            write_vae_figures(self, path.parent)


def make_trainer(cfg: TrainConfig, *args, **kwargs) -> ModelTrainer:
    """The trainer of cfg.model: `VAETrainer` for the VAE, `Trainer` for every GAN."""
    return (VAETrainer if cfg.model == "vae" else Trainer)(cfg, *args, **kwargs)


def build_augment(cfg: TrainConfig) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
    """ADA (stateful, adaptive p), DiffAugment, or nothing."""
    if cfg.ada.enabled:
        return AdaptiveAugment(cfg.ada, cfg.batch_size)
    if cfg.diffaugment:
        return lambda x, gen: diff_augment(x, cfg.diffaugment, gen)
    return None


def load_training_data(packed: Path, threads: int = 1, pin: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """The whole packed set as one (N, 3, R, R) uint8 tensor (pinned for fast, asynchronous GPU copies)."""
    images, labels, meta = load_packed(packed / ZIP_NAME, threads=threads)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return (x.pin_memory() if pin else x), (torch.from_numpy(labels) if labels is not None else None), meta


BEST = "best.pt"
FID_FIELDS = ["step", "fd", "kid"]


def _csv(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class Loop:
    """The one training loop (GANs, the VAE, CycleGAN): resume from dst/checkpoint.pt, step with a progress bar,
    sample grids every `sample_every` steps, checkpoints every `checkpoint_every` steps (and on a non-finite
    loss), losses.csv at the end. `extra` is saved with every checkpoint (e.g. the in-training FID history)."""

    def __init__(self, trainer, dst: Path, steps: int, checkpoint_every: int, sample_every: int, desc: str = "train"):
        self.trainer, self.dst, self.steps, self.desc = trainer, dst, steps, desc
        self.checkpoint_every, self.sample_every = checkpoint_every, sample_every
        self.extra: dict = {}

    def checkpoint(self, path: Path | None = None) -> None:
        save_checkpoint(path or self.dst / CHECKPOINT, {**self.trainer.state_dict(), **self.extra})

    def resume(self) -> dict | None:
        """Load dst/checkpoint.pt into the trainer when it exists; returns its state."""
        path = self.dst / CHECKPOINT
        if not path.is_file():
            return None
        state = load_checkpoint(path)
        self.trainer.load_state_dict(state)
        log.info("resumed from %s at step %d", path, self.trainer.step_done)
        return state

    def run(self, on_step: Callable[[dict, int], None] | None = None,
            after_step: Callable[[int], None] | None = None) -> TrainResult:
        """Train to `steps`; `on_step(losses, step)` gets every step's losses (e.g. a tracker's log_metrics),
        `after_step(step)` runs after each step on the main process, before a due checkpoint."""
        t, main = self.trainer, self.trainer.dist.main  # under DDP only rank 0 writes files and reports
        start = t.step_done
        t0 = time.perf_counter()
        bar = tqdm(range(start, self.steps), initial=start, total=self.steps, desc=self.desc, unit="step",
                   dynamic_ncols=True, disable=not main)
        try:
            for _ in bar:
                try:
                    row = t.step()
                except FloatingPointError:
                    if main:
                        self.checkpoint()
                    raise
                bar.set_postfix({k: f"{v:.3f}" for k, v in list(row.items())[1:3]}, refresh=False)
                done = t.step_done
                if not main:
                    continue
                if on_step:
                    on_step(row, done)
                if done % self.sample_every == 0 or done == self.steps:
                    t.write_samples(self.dst / "progress" / f"step{done:07d}.png")
                if after_step:
                    after_step(done)
                if done % self.checkpoint_every == 0 or done == self.steps:
                    self.checkpoint()
            bar.close()
            seconds = time.perf_counter() - t0
            if main:
                t.write_samples(self.dst / "samples.png", final=True)
                write_text(self.dst / "losses.csv", _csv(t.history, t.fields))
            log.info("trained %d steps in %.1f s (%.3f s/step)", self.steps - start, seconds,
                     seconds / max(1, self.steps - start))
        finally:
            teardown()
        return TrainResult(self.dst / CHECKPOINT, self.steps, seconds, t.history)


def run_train(cfg: TrainConfig, packed: Path, dst: Path, resume: bool = True,
              scorer: Callable[[np.ndarray], dict] | None = None,
              on_step: Callable[[dict, int], None] | None = None) -> TrainResult:
    """Train cfg.model on packed/dataset.zip; write checkpoint, sample grids and loss log to dst.

    With cfg.fid_every and a `scorer` (see facegan.evaluate.run.Scorer), the Frechet distance of
    cfg.fid_samples images at fixed noise is measured every cfg.fid_every steps (fid.csv) and the
    checkpoint with the lowest one is kept as best.pt. `on_step(values, step)` receives the losses
    of every step and the in-training FID (e.g. a tracker's log_metrics).
    """
    from facegan.sample import latents, render

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    dist, device_name = setup(cfg.device)
    device = resolve_device(device_name)
    images, labels, meta = load_training_data(packed, cfg.loader_threads, pin=device.type == "cuda")
    names = meta.get("label_names") or []
    values = meta.get("label_values") or {}
    trainer = make_trainer(cfg, images, labels, [len(values[n]) for n in names], device, dist, names, values)
    log.info("training %s (%s) on %d images at %dx%d, %d steps, device %s", cfg.model,
             "VAE loss" if cfg.model == "vae" else f"{cfg.loss} loss",
             len(images), trainer.resolution, trainer.resolution, cfg.steps, device)
    loop = Loop(trainer, dst, cfg.steps, cfg.checkpoint_every, cfg.sample_every)
    state = loop.resume() if resume else None
    fid_history: list[dict[str, float]] = list(state.get("fid", [])) if state else []
    loop.extra["fid"] = fid_history
    fid_on = bool(cfg.fid_every and scorer)
    if cfg.fid_every and not scorer:
        log.warning("train.fid_every is set but no reference statistics were given: no FID during training")
    z_fid, y_fid = latents(cfg.z_dim, cfg.fid_samples, cfg.seed + 7_777, trainer.labels)

    def measure_fid(done: int) -> None:
        if not fid_on or (done % cfg.fid_every and done != cfg.steps):
            return
        score = scorer(render(trainer.sampler, z_fid, y_fid), desc=f"FID @ step {done}")
        fid_history.append({"step": done, "fd": score["fd"], "kid": score["kid"]})
        if on_step:
            on_step({"fid_train": score["fd"], "kid_train": score["kid"]}, done)
        best = min(r["fd"] for r in fid_history)
        log.info("step %d: Frechet distance %.4f (best %.4f)", done, score["fd"], best)
        if score["fd"] <= best:
            loop.checkpoint(dst / BEST)
        write_text(dst / "fid.csv", _csv(fid_history, FID_FIELDS))

    return loop.run(on_step, measure_fid)
