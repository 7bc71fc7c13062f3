"""The VAE trainer (model `vae`): the encoder sits in D's place, the decoder in G's; one update of both per step."""

from __future__ import annotations

from pathlib import Path

import torch

from facegan.device import to_device
from facegan.models.vae import kl_divergence, reparameterize
from facegan.train.trainer import ModelTrainer


class VAETrainer(ModelTrainer):
    """loss = squared error per image (Gaussian decoder) + kl_weight * KL, the weight ramped over kl_warmup."""

    def kl_weight(self, step: int) -> float:
        v = self.cfg.vae
        return v.kl_weight * min(1.0, (step + 1) / v.kl_warmup) if v.kl_warmup else v.kl_weight

    def encode(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z, mu, logvar): z sampled with the reparameterisation trick, noise from `gen`."""
        mu, logvar = self.d_run(x)
        eps = to_device(self.dist.shard(torch.randn(len(x) * self.dist.world, mu.shape[1], generator=gen)), mu.device)
        return reparameterize(mu, logvar, eps), mu, logvar

    def _step(self) -> None:
        step = self.step_done
        gen, _ = self.generators(step)
        real, _ = self.real(step, gen)
        beta = self.kl_weight(step)
        with self.autocast():
            z, mu, logvar = self.encode(real, gen)
            recon = self.g_run(z).float()
        sse = (recon - real).pow(2).flatten(1).sum(1).mean()
        kl = kl_divergence(mu.float(), logvar.float())
        loss = sse + beta * kl
        self.update(loss, self.opt_g, self.opt_d)
        self.after_step()
        self.record({"loss": loss, "recon_mse": sse / real[0].numel(), "kl": kl}, kl_weight=beta)

    def write_samples(self, path: Path, final: bool = False) -> None:
        super().write_samples(path, final)
        if final:
            from facegan.sample import write_vae_figures

            write_vae_figures(self, path.parent)
