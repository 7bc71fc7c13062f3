"""Sampling from generators: fixed-noise grids, per-attribute grids, interpolation GIFs, `facegan sample`."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from facegan.errors import FaceganError, OutputError
from facegan.io import atomic_file, image_grid, write_image
from facegan.seeds import check_seeds, seed_labels, seed_rows, seed_z
from facegan.train.images import seeded_subset, to_float, to_uint8

N_FIXED = 64
NOISE_OFFSET = 2_000_003  # `render`'s noise-map stream of a seed (facegan.seeds' label stream is at 1_000_003)
GRID_COLS = 8


class LabelError(FaceganError, ValueError):
    """A --labels spec naming an unknown attribute or value; the message lists the valid ones."""


class EarlierSamples(FaceganError, FileExistsError):
    """An output folder holding the images of an earlier `facegan sample`, which new ones would mix with."""


# what `facegan sample` writes into its folder (seed may be negative; at least 4 digits), and the temporary
# files of a write that was cut off (facegan.io.write_image)
SAMPLE_IMAGE = re.compile(r"seed-?\d+_\d{4,}\.png")
GRID = "grid.png"  # a preview of the first images, beside them (facegan fid leaves it out)
_WRITTEN = rf"{SAMPLE_IMAGE.pattern}|{re.escape(GRID)}"
_SAMPLE_FILE = re.compile(rf"({_WRITTEN})|\.({_WRITTEN})\.tmp\.png")


def earlier_samples(out: Path, overwrite: bool) -> list[Path]:
    """The files an earlier `facegan sample` wrote in `out` (seed<S>_<i>.png, grid.png), for the caller to remove
    once its inputs are checked. New images would mix with them (a later `facegan fid` of the folder would score
    both models; a smaller -n would leave the tail of a larger one), so without `overwrite` they are refused."""
    earlier = sorted(p for p in out.glob("*.png") if _SAMPLE_FILE.fullmatch(p.name) and p.is_file())
    if earlier and not overwrite:
        raise EarlierSamples(
            f"{out}: holds {len(earlier)} image(s) of an earlier `facegan sample` ({earlier[0].name}, ...); "
            "give another --out, or --overwrite to replace them"
        )
    return earlier


STAGING = ".facegan-sample.partial"  # where a `facegan sample` writes before its images replace the folder's


def write_sample_folder(
    batches: Iterator[np.ndarray], out: Path, seed: int, n: int, earlier: list[Path], grid: bool, progress
) -> int:
    """Write the `n` images of `batches` to `out` as seed<S>_<i>.png (and grid.png of the first N_FIXED with
    `grid`), in place of the `earlier` sample's files; returns how many the grid shows. Everything is written to a
    hidden folder in `out` first and moved in at the end: a write that fails (a full disk) or is cut off leaves
    the folder as it was, the earlier sample whole (it deleted that first, then failed with part of the new one
    written); the folder needs room for both sets meanwhile. OutputError for a write the system refuses;
    `progress.update(k)` after each batch."""
    stage = out / STAGING
    shutil.rmtree(stage, ignore_errors=True)  # one a killed run left
    digits = max(4, len(str(n - 1)))  # names sort in sampling order
    first: list[np.ndarray] = []
    try:
        stage.mkdir()
        written = 0
        for images in batches:  # one batch in memory, whatever n
            for im in images:
                write_image(stage / f"seed{seed}_{written:0{digits}d}.png", im)
                written += 1
            first += list(images[: N_FIXED - len(first)])
            progress.update(len(images))
        if grid:
            write_image(stage / GRID, image_grid(np.stack(first), ncols=int(np.ceil(np.sqrt(len(first))))))
    except OSError as e:
        shutil.rmtree(stage, ignore_errors=True)
        kept = f"; the {len(earlier)} image(s) of the earlier sample are kept" if earlier else ""
        raise OutputError(f"facegan sample --out: cannot write to {out}: {e.strerror or e}{kept}") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    # the new files first (each in place of an earlier one of its name), then the earlier ones left: cut off here,
    # the folder holds the new set whole or part of it beside earlier files, never neither
    moved = {out / f.name for f in sorted(stage.iterdir())}
    for path in sorted(moved):
        os.replace(stage / path.name, path)
    for path in earlier:
        if path not in moved:
            path.unlink(missing_ok=True)
    stage.rmdir()
    return len(first) if grid else 0


def latents(z_dim: int, n: int, seed: int, label_pool: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Noise (and, for conditional models, label rows drawn from `label_pool`) fixed by `seed`."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, z_dim, generator=gen)
    y = label_pool[torch.randint(len(label_pool), (n,), generator=gen)] if label_pool is not None else None
    return z, y


@torch.no_grad()
def render(
    g: torch.nn.Module,
    z: torch.Tensor,
    y: torch.Tensor | None = None,
    batch: int = 64,
    noise_seed: int | None = None,
) -> np.ndarray:
    """Images (N, H, W, 3) uint8 from G in eval mode (G's mode is restored afterwards). A style-based G uses its
    fixed noise maps (one set for every image: a seed's image is the same wherever it is drawn), or with
    `noise_seed` per-image maps, as the reference's metrics draw them (stylegan2-ada's noise_mode 'random'):
    drawn on G's device from a generator seeded with it (apart from z's stream), batch by batch, so an image's
    maps also depend on `batch`, its place in the batches and the device kind. Other G take no noise maps."""
    was = g.training
    g.eval()
    device = next(g.parameters()).device
    shapes: Any = getattr(g, "noise_shapes", None)  # a style-based G's (stylegan2.Generator)
    noise = None
    if noise_seed is not None and shapes is not None:
        noise = torch.Generator(device).manual_seed(noise_seed + NOISE_OFFSET)
    out = []
    for i in range(0, len(z), batch):
        zi = z[i : i + batch].to(device)
        args = (zi, y[i : i + batch].to(device)) if y is not None else (zi,)
        kw: dict = {}
        if noise is not None:  # on the device: at 1024 px a batch's maps are 2.8M normals an image
            kw["noise"] = [torch.randn(s, generator=noise, device=device) for s in shapes(len(zi))]
        out.append(to_uint8(g(*args, **kw)))
    g.train(was)
    return np.concatenate(out)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of a and b (N, D) at fractions t (N,) (the Gaussian shell is a
    sphere); linear where two rows are parallel."""
    cos = ((a / a.norm(dim=-1, keepdim=True)) * (b / b.norm(dim=-1, keepdim=True))).sum(-1).clamp(-1, 1)
    omega = torch.arccos(cos)[..., None]
    t = t[:, None]
    so = torch.sin(omega)
    lin = (1 - t) * a + t * b
    return torch.where(
        so.abs() < 1e-6, lin, (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / so.clamp_min(1e-12)
    )


def write_interpolation_gif(
    g: torch.nn.Module,
    z_dim: int,
    seeds: tuple[int, int],
    path: Path,
    y: torch.Tensor | None = None,
    frames: int = 24,
    scale: int = 2,
) -> None:
    """A ping-pong GIF walking from the noise of seeds[0] to that of seeds[1]."""
    za, zb = (torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds)
    z = slerp(za.expand(frames, -1), zb.expand(frames, -1), torch.linspace(0, 1, frames))
    ys = y[:1].expand(frames, -1) if y is not None else None
    ims = [
        Image.fromarray(im).resize((im.shape[1] * scale, im.shape[0] * scale), Image.Resampling.NEAREST)
        for im in render(g, z, ys)
    ]
    seq = ims + ims[-2:0:-1]
    with atomic_file(path) as tmp:
        seq[0].save(tmp, format="GIF", save_all=True, append_images=seq[1:], duration=80, loop=0)


def attribute_grid(g: torch.nn.Module, z: torch.Tensor, base: torch.Tensor, attr: int, n_values: int) -> np.ndarray:
    """One row per value of attribute `attr` (others as in `base`), one column per noise vector."""
    rows = []
    for v in range(n_values):
        y = base.expand(len(z), -1).clone()
        y[:, attr] = v
        rows.append(render(g, z, y))
    return image_grid(np.concatenate(rows), ncols=len(z))


def write_training_samples(
    trainer,
    path: Path,
    final: bool = False,
    label_names: list[str] | None = None,
    label_values: dict[str, list[str]] | None = None,
) -> None:
    """Grid at fixed noise; when final, also per-attribute grids (conditional), an interpolation GIF and,
    for StyleGAN2, the style-mixing / truncation / SeFa figures."""
    cfg = trainer.cfg
    z, y = latents(cfg.z_dim, N_FIXED, cfg.seed + 99_991, trainer.labels)
    g = trainer.sampler
    write_image(path, image_grid(render(g, z, y), ncols=GRID_COLS))
    if not final:
        return
    write_interpolation_gif(g, cfg.z_dim, (cfg.seed, cfg.seed + 1), path.parent / "interpolation.gif", y)
    if cfg.spec.style:
        from facegan.sample_style import write_style_figures

        write_style_figures(g, path.parent, cfg.seed)
    if y is not None and label_names and label_values:
        for a, name in enumerate(label_names):
            grid = attribute_grid(g, z[:GRID_COLS], y[:1], a, len(label_values[name]))
            write_image(path.parent / f"samples_by_{name}.png", grid)


@torch.no_grad()
def write_vae_figures(trainer, out: Path, n: int = GRID_COLS, steps: int = GRID_COLS) -> None:
    """VAE: reconstructions.png (rows of real images, each above its reconstruction from the mean code) and
    latent_interpolation.png (each row walks linearly between the codes of two real images)."""
    was = trainer.g.training, trainer.d.training
    trainer.g.eval(), trainer.d.eval()
    real = to_float(seeded_subset(trainer.images, 2 * n, trainer.cfg.seed + 5).to(trainer.device))
    mu, _ = trainer.d(real)  # the encoder itself, not its DDP wrapper: only the main process draws
    recon = trainer.sampler(mu)
    cols = min(n, len(real))  # a set smaller than 2n: each real image still above its reconstruction
    rows = []
    for i in range(0, len(real), cols):
        for part in (real[i : i + cols], recon[i : i + cols]):
            rows += [part, torch.ones_like(real[: cols - len(part)])]  # white after a short row
    write_image(out / "reconstructions.png", image_grid(to_uint8(torch.cat(rows)), ncols=cols))
    pairs = len(mu) // 2  # fewer than 2n images in the set: as many walks as there are pairs
    a, b = mu[:pairs], mu[pairs : 2 * pairs]
    t = torch.linspace(0, 1, steps, device=mu.device)[None, :, None]
    walk = (a[:, None] * (1 - t) + b[:, None] * t).reshape(-1, mu.shape[1])
    if pairs:
        write_image(out / "latent_interpolation.png", image_grid(to_uint8(trainer.sampler(walk)), ncols=steps))
    trainer.g.train(was[0]), trainer.d.train(was[1])


def parse_labels(spec: str, names: list[str], values: dict[str, list[str]]) -> dict[int, int]:
    """`hair=blond,glasses=1` -> {attribute index: value index}. A prefix names an attribute when it,
    with the value, is unambiguous."""
    if not names:
        raise LabelError("this model is unconditional: it takes no --labels")
    out: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in part:
            raise LabelError(f"label {part!r}: write NAME=VALUE (attributes: {', '.join(names)})")
        key, val = (s.strip() for s in part.split("=", 1))
        matches = [n for n in names if n == key] or [n for n in names if n.startswith(key)]
        if not matches:
            raise LabelError(f"unknown label {key!r}; attributes: {', '.join(names)}")
        if len(matches) > 1:  # an ambiguous prefix ("hair") is settled by the value ("blond")
            having = [n for n in matches if val in values[n]]
            if not having:
                valid = "; ".join(f"{n}: {', '.join(values[n])}" for n in matches)
                raise LabelError(f"unknown value {val!r} for {key!r} ({valid})")
            if len(having) > 1:
                raise LabelError(f"label {key!r} is ambiguous ({', '.join(having)}): write the full name")
            matches = having
        name = matches[0]
        if val not in values[name]:
            raise LabelError(f"unknown value {val!r} for {name}; valid: {', '.join(values[name])}")
        index = names.index(name)
        if index in out and out[index] != values[name].index(val):  # the last one won, without a word
            raise LabelError(f"{name} is given twice, as {values[name][out[index]]!r} and {val!r}: give it once")
        out[index] = values[name].index(val)
    return out


def sample_stream(
    checkpoint: Path, n: int, seed: int, labels: str = "", batch: int = 64, labels_from: Path | None = None
) -> Iterator[np.ndarray]:
    """The images of `sample_checkpoint`, `batch` at a time: memory holds one batch of images, whatever n. Image i is
    seed `seed + i`'s (its z, and its labels but those fixed by `labels`), the same whatever n, and the explorer's
    image of that seed. A conditional model's labels are uniform per attribute, or with `labels_from` (a packed
    dataset's folder) a label row of that set per seed: its joint distribution, as the evaluate stage draws them.
    The seeds, the checkpoint and the labels are checked here, before the first batch."""
    from facegan.train.checkpoint import label_schema, load_generator

    check_seeds(seed, n)
    g, cfg, state = load_generator(checkpoint)
    names, values = label_schema(state)
    conditional = bool(state.get("label_dims"))
    fixed = parse_labels(labels, names, values) if conditional else parse_labels(labels, [], {}) if labels else {}
    pool = real_label_rows(labels_from, names, values, conditional) if labels_from is not None else None

    def images(first: int, count: int) -> np.ndarray:  # seeds first .. first + count - 1
        seeds = range(first, first + count)
        if not conditional:
            y = None
        elif pool is not None:
            y = pool[seed_rows(seeds, len(pool))]
        else:
            y = seed_labels(seeds, [len(values[nm]) for nm in names])
        if y is not None:
            for a, v in fixed.items():
                y[:, a] = v
        return render(g, seed_z(cfg.z_dim, seeds), y, batch)

    return (images(seed + i, min(batch, n - i)) for i in range(0, n, batch))


def real_label_rows(packed: Path, names: list[str], values: dict[str, list[str]], conditional: bool) -> torch.Tensor:
    """The label rows of the packed dataset in folder `packed` (data/processed/<ds>) for a model of these labels;
    LabelError for an unconditional model, a set without labels or with others than the model learned."""
    from facegan.data.packed import ZIP_NAME, load_labels, packed_meta

    if not conditional:
        raise LabelError("this model is unconditional: it takes no --labels-from")
    zip_path = packed / ZIP_NAME
    if not zip_path.is_file():
        raise LabelError(f"--labels-from {packed}: no {ZIP_NAME} there (give a packed dataset's folder)")
    meta = packed_meta(zip_path)
    rows = load_labels(zip_path, meta)
    if rows is None:
        raise LabelError(f"--labels-from {packed}: the set has no labels")
    if (meta["label_names"], meta["label_values"]) != (names, values):
        raise LabelError(
            f"--labels-from {packed}: its labels ({', '.join(meta['label_names'])}) are not the model's "
            f"({', '.join(names)}, with the same values)"
        )
    return torch.from_numpy(rows)


def sample_checkpoint(checkpoint: Path, n: int, seed: int, labels: str = "") -> np.ndarray:
    """n images from a checkpoint; labels fix some attributes, the rest are drawn at random."""
    return np.concatenate(list(sample_stream(checkpoint, n, seed, labels)))
