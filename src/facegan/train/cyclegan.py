"""CycleGAN training (Zhu et al. 2017) on two packed datasets A and B, stepped by the shared `Loop`.

Per step: one update of both generators (adversarial + L1 cycle consistency + identity + optional SSIM
on the cycle reconstructions), then one update of both PatchGAN discriminators on real images and on
generated ones drawn from a history pool; the D loss is halved, as in the paper. The learning rate is
constant until `decay_start`, then decays linearly to 0 at the last step. DiffAugment, when set, is
applied to every image the discriminators see. Randomness per step comes from (seed, step) alone and
the pools are in the checkpoint, so a resumed run continues exactly as the uninterrupted one (CPU).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facegan.augment.diffaugment import diff_augment
from facegan.config import CycleGANConfig
from facegan.io import image_grid, write_image
from facegan.losses import get_loss
from facegan.models.cyclegan import PatchDiscriminator, ResnetGenerator
from facegan.models.dcgan import init_weights
from facegan.train.dist import Dist
from facegan.train.images import seeded_subset, to_float, to_uint8
from facegan.train.stepper import Stepper, load_optimizer


class ImagePool:
    """The last `size` generated images; D sees a random half of each batch from this history
    (Shrivastava et al. 2017), which damps oscillation. Seeded draws, state kept in checkpoints. The history stays
    on the images' device (a few MB; a copy to the host per image would sync a GPU every step)."""

    def __init__(self, size: int):
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.size == 0:
            return x
        out = []
        for img in x.detach():
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif torch.rand((), generator=gen) < 0.5:
                j = int(torch.randint(self.size, (), generator=gen))
                out.append(self.images[j].to(img))
                self.images[j] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def state_dict(self) -> torch.Tensor | None:
        return torch.stack([im.cpu() for im in self.images]) if self.images else None

    def load_state_dict(self, state: torch.Tensor | None, device: torch.device) -> None:
        self.images = list(state.to(device)) if state is not None else []


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM (11x11 Gaussian window) of images in [-1, 1] (kornia)."""
    from kornia.losses import ssim_loss

    return 1 - 2 * ssim_loss(x.float(), y.float(), window_size=11, max_val=2.0)


class CycleTrainer(Stepper):
    """Two ResNet generators (A->B, B->A), two PatchGAN discriminators, their optimisers and one `_step()`."""

    def __init__(
        self,
        cfg: CycleGANConfig,
        images_a: torch.Tensor,
        images_b: torch.Tensor,
        device: torch.device,
        dist: Dist = Dist(),
    ):
        super().__init__(cfg, device, dist, batch_size=cfg.batch_size, mirror=cfg.mirror)
        if images_a.shape[1:] != images_b.shape[1:]:
            raise ValueError(
                f"datasets a and b differ in image shape: {tuple(images_a.shape[1:])} vs {tuple(images_b.shape[1:])}"
            )
        self.cfg, self.images_a, self.images_b = cfg, images_a, images_b
        self.resolution = images_a.shape[-1]
        torch.manual_seed(cfg.seed)
        nets: dict[str, nn.Module] = {
            "G_ab": ResnetGenerator(cfg.g_channels, cfg.res_blocks),
            "G_ba": ResnetGenerator(cfg.g_channels, cfg.res_blocks),
            "D_a": PatchDiscriminator(cfg.d_channels, cfg.d_layers, cfg.spectral_norm),
            "D_b": PatchDiscriminator(cfg.d_channels, cfg.d_layers, cfg.spectral_norm),
        }
        for net in nets.values():
            net.apply(init_weights)
        self.nets = {k: v.to(device).train() for k, v in nets.items()}
        self.channels_last(*self.nets.values())
        self.run = {k: self.wrap(v)[0] for k, v in self.nets.items()}
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = self.adam(
            itertools.chain(self.nets["G_ab"].parameters(), self.nets["G_ba"].parameters()), cfg.lr, betas
        )
        self.opt_d = self.adam(
            itertools.chain(self.nets["D_a"].parameters(), self.nets["D_b"].parameters()), cfg.lr, betas
        )
        self.loss = get_loss(cfg.loss)
        self.pools = {"a": ImagePool(cfg.pool_size), "b": ImagePool(cfg.pool_size)}

    def lr_at(self, step: int) -> float:
        """Constant, then linear decay to 0 over the steps from `decay_start` to the last."""
        c = self.cfg
        return c.lr * max(0.0, 1 - max(0, step - c.decay_start) / max(1, c.steps - c.decay_start))

    def _d_view(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return diff_augment(x, self.cfg.diffaugment, gen) if self.cfg.diffaugment else x

    def _step(self) -> None:
        cfg, run, step = self.cfg, self.run, self.step_done
        gen, aug = self.generators(step)
        a, _ = self.batch(self.images_a, step, gen, cfg.seed)
        b, _ = self.batch(self.images_b, step, gen, cfg.seed + 1)
        lr = self.lr_at(step)
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        zero = torch.zeros((), device=self.device)
        # G through both Ds, which take no gradients meanwhile (nor sync under DDP)
        with self.through(self.nets["D_a"], run["D_a"]), self.through(self.nets["D_b"], run["D_b"]):
            with self.autocast():
                fake_b, fake_a = run["G_ab"](a), run["G_ba"](b)
                rec_a, rec_b = run["G_ba"](fake_b), run["G_ab"](fake_a)
                adversarial = self.loss.g(run["D_b"](self._d_view(fake_b, aug)).float()) + self.loss.g(
                    run["D_a"](self._d_view(fake_a, aug)).float()
                )
                cycle = F.l1_loss(rec_a.float(), a) + F.l1_loss(rec_b.float(), b)
                identity = (
                    F.l1_loss(run["G_ab"](b).float(), b) + F.l1_loss(run["G_ba"](a).float(), a)
                    if cfg.identity_weight
                    else zero
                )
            structure = (2 - ssim(rec_a, a) - ssim(rec_b, b)) if cfg.ssim_weight else zero
            loss_g = (
                adversarial
                + cfg.cycle_weight * cycle
                + cfg.cycle_weight * cfg.identity_weight * identity
                + cfg.ssim_weight * structure
            )
            self.update(loss_g, self.opt_g)

        old_a, old_b = self.pools["a"].query(fake_a, gen), self.pools["b"].query(fake_b, gen)
        with self.autocast():
            d_a = self.loss.d(
                run["D_a"](self._d_view(a, aug)).float(), run["D_a"](self._d_view(old_a.detach(), aug)).float()
            )
            d_b = self.loss.d(
                run["D_b"](self._d_view(b, aug)).float(), run["D_b"](self._d_view(old_b.detach(), aug)).float()
            )
        loss_d = 0.5 * (d_a + d_b)
        self.update(loss_d, self.opt_d)
        self.record(
            {
                "loss_g": loss_g,
                "loss_d": loss_d,
                "adversarial": adversarial,
                "cycle": cycle,
                "identity": identity,
                "ssim": structure,
                "d_a": d_a,
                "d_b": d_b,
            },
            lr=lr,
        )

    @torch.no_grad()
    def translate(self, images: torch.Tensor, direction: str, batch: int = 32) -> torch.Tensor:
        """Images of one domain (uint8, or floats in [-1, 1]), (N, 3, R, R) -> their translations as floats
        in [-1, 1], on the trainer's device; `direction` 'ab' or 'ba'."""
        g = self.nets[f"G_{direction}"]
        was = g.training
        g.eval()
        out = []
        for i in range(0, len(images), batch):
            x = images[i : i + batch].to(self.device)
            out.append(g(to_float(x) if x.dtype == torch.uint8 else x))
        g.train(was)
        return torch.cat(out)

    def write_samples(self, path: Path, final: bool = False, n: int = 8) -> None:
        """Rows: real A, A->B, A->B->A, real B, B->A, B->A->B (n fixed images each); when final, the two
        directions also as translated_a_to_b.png / translated_b_to_a.png."""
        grids = {}
        for src, there, back, name in ((self.images_a, "ab", "ba", "a_to_b"), (self.images_b, "ba", "ab", "b_to_a")):
            real = seeded_subset(src, n, self.cfg.seed + 3)
            moved = self.translate(real, there)
            grids[name] = torch.cat([to_float(real.to(moved.device)), moved, self.translate(moved, back)])
        write_image(path, image_grid(to_uint8(torch.cat(list(grids.values()))), ncols=n))
        if final:
            for name, rows in grids.items():
                write_image(path.parent / f"translated_{name}.png", image_grid(to_uint8(rows), ncols=n))

    def state_dict(self) -> dict:
        return {
            **self.state(),
            **{k: v.state_dict() for k, v in self.nets.items()},
            "opt_G": self.opt_g.state_dict(),
            "opt_D": self.opt_d.state_dict(),
            "pool_a": self.pools["a"].state_dict(),
            "pool_b": self.pools["b"].state_dict(),
            "config": self.cfg.model_dump(mode="json"),
            "resolution": self.resolution,
        }

    def load_state_dict(self, state: dict) -> None:
        self.warn_world(state)
        self.cfg.check_resumable(state["config"], "cyclegan")
        for k, net in self.nets.items():
            net.load_state_dict(state[k])
        load_optimizer(self.opt_g, state["opt_G"])
        load_optimizer(self.opt_d, state["opt_D"])
        self.pools["a"].load_state_dict(state["pool_a"], self.device)
        self.pools["b"].load_state_dict(state["pool_b"], self.device)
        self.load_state(state)
