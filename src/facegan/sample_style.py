"""StyleGAN2 latent tools and figures: style mixing by layer group, truncation, latent directions from
closed-form factorization (SeFa, Shen & Zhou 2021) and from PCA of sampled w (GANSpace, Harkonen et al. 2020).

All images come from the generator in eval mode (fixed noise), so a figure is repeatable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facegan.io import image_grid, write_image
from facegan.seeds import seed_z
from facegan.train.images import to_uint8

PSIS = (1.0, 0.8, 0.6, 0.4, 0.2, 0.0)


def _z(g, seeds) -> torch.Tensor:
    """The seeds' noise vectors (facegan.seeds: a seed's image is the one `facegan sample` draws), on G's device."""
    return seed_z(g.style_dim, list(seeds)).to(g.w_avg.device)


def _ws(g, seeds, psi: float = 1.0) -> torch.Tensor:
    """Per-layer styles (N, n_latent, style_dim) of the given seeds."""
    return g.latents(_z(g, seeds), psi)


def _render_w(g, w: torch.Tensor) -> np.ndarray:
    return np.concatenate([to_uint8(g.synthesis(w[i : i + 32])) for i in range(0, len(w), 32)])


@torch.no_grad()
def style_mixing_grid(g, row_seeds, col_seeds, cutoff: int | None = None) -> np.ndarray:
    """Top row: column sources; left column: row sources; cell (i, j): row i's styles for the coarse
    layers (< cutoff), column j's for the rest."""
    g.eval()
    cutoff = cutoff if cutoff is not None else g.n_latent // 2
    wr, wc = _ws(g, row_seeds), _ws(g, col_seeds)
    cells = []
    for i in range(len(row_seeds)):
        w = wc.clone()
        w[:, :cutoff] = wr[i, :cutoff]
        cells.append(w)
    images = _render_w(g, torch.cat([wc, wr, *cells]))
    cols, rows = images[: len(col_seeds)], images[len(col_seeds) : len(col_seeds) + len(row_seeds)]
    mixed = images[len(col_seeds) + len(row_seeds) :]
    blank = np.full_like(images[0], 255)
    tiles = [blank, *cols]
    for i in range(len(row_seeds)):
        tiles += [rows[i], *mixed[i * len(col_seeds) : (i + 1) * len(col_seeds)]]
    return image_grid(np.stack(tiles), ncols=len(col_seeds) + 1)


@torch.no_grad()
def truncation_sweep(g, seeds, psis=PSIS) -> np.ndarray:
    """One row per seed, one column per psi (1 = no truncation, 0 = the average face)."""
    g.eval()
    w = torch.cat([_ws(g, [s], psi) for s in seeds for psi in psis])
    return image_grid(_render_w(g, w), ncols=len(psis))


def sefa_directions(g, k: int = 5) -> torch.Tensor:
    """The top-k eigenvectors of A^T A, A = every StyledConv's (effective) style affine weight: the
    directions in w-space that change the modulation the most (SeFa)."""
    weights = [m.conv.modulation for m in [g.conv1, *g.convs]]
    a = torch.cat([lin.weight.detach().float() * lin.scale for lin in weights])
    _, vecs = torch.linalg.eigh(a.T @ a)
    return vecs[:, -k:].flip(1).T  # (k, style_dim), largest eigenvalue first


SPREAD_SEEDS = range(10_000, 11_000)  # the fixed w samples that measure a direction's spread


@torch.no_grad()
def direction_spread(g, dirs: torch.Tensor) -> torch.Tensor:
    """Standard deviation of w projected on each direction, over 1000 fixed samples: one slider unit."""
    return (g.style(_z(g, SPREAD_SEEDS)) @ dirs.to(g.w_avg.device).T).std(0)


@torch.no_grad()
def ganspace_directions(g, k: int = 5, n: int = 2000, seed: int = 20_000) -> tuple[torch.Tensor, torch.Tensor]:
    """GANSpace: the top-k principal axes of w over n sampled z (k, style_dim), with the standard deviation
    of w along each; the axes with the most variance of the learned w distribution."""
    w = g.style(_z(g, range(seed, seed + n))).float()
    _, s, vt = torch.linalg.svd(w - w.mean(0), full_matrices=False)
    return vt[:k], s[:k] / (n - 1) ** 0.5


def latent_directions(g, method: str, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(directions (k, style_dim), spread (k,)) of `method`: 'sefa' or 'ganspace'."""
    from facegan.registry import pick

    return pick(DIRECTIONS, method, "direction method")(g, k)


def _sefa_with_spread(g, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    dirs = sefa_directions(g, k).to(g.w_avg.device)
    return dirs, direction_spread(g, dirs)


DIRECTIONS = {"sefa": _sefa_with_spread, "ganspace": ganspace_directions}


def layer_groups(g) -> dict[str, list[int]]:
    """Style indices of the coarse, middle and fine layers: the resolutions 4..R split into thirds (the first
    thirds get the extra level), e.g. 64 px: coarse 4-8, middle 16-32, fine 64. Index i drives resolution
    min(4 * 2**ceil(i / 2), R) (a ToRGB shares its index with the next level's first conv)."""
    levels = [4 * 2**i for i in range(g.n_latent // 2)]
    level_of = [min(4 * 2 ** (-(-i // 2)), g.resolution) for i in range(g.n_latent)]
    return {
        name: [i for i, r in enumerate(level_of) if r in part]
        for name, part in zip(("coarse", "middle", "fine"), map(set, np.array_split(levels, 3)), strict=True)
    }


@torch.no_grad()
def sefa_grid(g, seed: int = 0, k: int = 5, steps: int = 7, sigmas: float = 3.0) -> np.ndarray:
    """One row per direction (k, or as many as w has dimensions): the seed's image moved from -sigmas to +sigmas
    standard deviations (of w projected on the direction, over 1000 samples)."""
    g.eval()
    dirs, spread = _sefa_with_spread(g, k)
    base = _ws(g, [seed])[0]
    offsets = torch.linspace(-sigmas, sigmas, steps, device=base.device)
    w = torch.stack([base + (o * s) * d for d, s in zip(dirs, spread, strict=True) for o in offsets])
    return image_grid(_render_w(g, w), ncols=steps)


def write_style_figures(g, dst: Path, seed: int = 0) -> list[Path]:
    """style_mixing.png, truncation.png, sefa.png next to the samples."""
    was = g.training
    out = {
        "style_mixing.png": style_mixing_grid(g, [seed + i for i in range(5)], [seed + 100 + i for i in range(6)]),
        "truncation.png": truncation_sweep(g, [seed + i for i in range(4)]),
        "sefa.png": sefa_grid(g, seed),
    }
    g.train(was)
    for name, im in out.items():
        write_image(dst / name, im)
    return [dst / n for n in out]
