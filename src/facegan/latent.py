"""Latent-space tools over every model kind facegan trains: what `facegan explore` shows, usable from scripts.

`load_model(checkpoint)` reads a `facegan.train` checkpoint (dcgan, wgan-gp, acgan, stylegan2, vae) or the
CycleGAN's and returns the matching wrapper from `KINDS`, in eval mode on the CPU:
- `Sampler` (every generator): images by seed (one z per seed, so image i of a grid from seed s is the image of
  seed s + i), batch grids, interpolation strips (linear or slerp); `ConditionalSampler` (acgan) takes
  attribute values, a missing one is drawn from the seed;
- `StyleSampler` (stylegan2): truncation psi, SeFa / GANSpace directions in w, style mixing by layer group;
- `VAESampler`: encode an uploaded face, its reconstruction and decoded neighbours of its code;
- `Translator` (cyclegan): an uploaded face translated both ways (and back).
Every user-facing failure is an `ExploreError` whose message is one line naming the input and what to do.
"""

from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facegan.errors import FaceganError
from facegan.io import ImageError, image_grid, read_image, to_rgb8, write_text
from facegan.sample import slerp
from facegan.seeds import SeedError, generator, seed_labels, seed_z
from facegan.track import direction_name
from facegan.train.checkpoint import label_schema
from facegan.train.images import to_float, to_uint8

log = logging.getLogger(__name__)

RANDOM = "random"  # an attribute value left to the seed
MAX_BATCH = 64


class ExploreError(FaceganError, ValueError):
    """A model, control value or upload the explorer cannot use; str(e) is the one-line message shown."""


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int, mode: str) -> torch.Tensor:
    """(steps, ...) latents from a to b, `mode` 'linear' or 'slerp' (rows flattened for slerp)."""
    t = torch.linspace(0, 1, steps)
    if mode == "linear":
        return torch.lerp(a[None], b[None], t.view(-1, *[1] * a.dim()))
    if mode == "slerp":
        flat = slerp(a.reshape(1, -1).expand(steps, -1), b.reshape(1, -1).expand(steps, -1), t)
        return flat.view(steps, *a.shape)
    raise ExploreError(f"unknown interpolation {mode!r}; choose linear or slerp")


def strip(images: np.ndarray) -> np.ndarray:
    """Images side by side in one row."""
    return image_grid(images, ncols=len(images))


def grid(images: np.ndarray) -> np.ndarray:
    """A near-square grid."""
    return image_grid(images, ncols=int(np.ceil(np.sqrt(len(images)))))


def _count(n: int, what: str, hi: int = MAX_BATCH) -> int:
    n = int(n)
    if not 1 <= n <= hi:
        raise ExploreError(f"{what} must be between 1 and {hi}, got {n}")
    return n


def _finite(value: float, what: str) -> float:
    """A control's number; NaN or infinity (from a script or gradio's API: the sliders send neither) rendered a
    black image without a word."""
    value = float(value)
    if not math.isfinite(value):
        raise ExploreError(f"{what} must be a finite number, got {value}")
    return value


def _z(z_dim: int, seeds: Sequence[int]) -> torch.Tensor:
    """facegan.seeds.seed_z, a seed out of its range an ExploreError."""
    try:
        return seed_z(z_dim, seeds)
    except SeedError as e:
        raise ExploreError(str(e)) from None


# ---- uploads ------------------------------------------------------------------------------------------------


def read_upload(path: str | Path | None) -> np.ndarray:
    """An uploaded file as HxWx3 uint8 (any common format, EXIF-rotated); ExploreError for no file or a
    file that is not a readable image."""
    if path is None or str(path) == "":
        raise ExploreError("upload a face image first (PNG, JPEG, WebP, ...)")
    p = Path(path)
    if not p.is_file():  # gradio's cache sweep (a day on) removes uploads still shown on a page
        raise ExploreError(f"upload {p.name!r} is no longer on the server (or is no file): upload it again")
    try:
        return read_image(p)
    except ImageError as e:
        reason = str(e).replace(f"'{p}'", "").replace(str(p), p.name).strip()  # the server's temp path means nothing
        raise ExploreError(
            f"upload {p.name!r} is not a usable image ({reason}); upload a PNG, JPEG or WebP face"
        ) from None
    except OSError as e:
        raise ExploreError(f"upload {p.name!r} could not be read ({e.strerror or e})") from None


def rgb(image: np.ndarray) -> np.ndarray:
    """An image array as HxWx3 uint8: gray (HxW, HxWx1) and RGBA (alpha on white, as read_image) are converted;
    any other dtype or shape is an ExploreError (read_upload turns any image file into this)."""
    from PIL import Image

    a = np.asarray(image)
    if a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and a.size:
        return a
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 4)) or not a.size:
        raise ExploreError(
            f"an image must be an HxW, HxWx1, HxWx3 or HxWx4 uint8 array, not {a.dtype} of shape {a.shape} "
            "(facegan.latent.read_upload reads any image file as one)"
        )
    return to_rgb8(Image.fromarray(np.ascontiguousarray(a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a)))


def fit(image: np.ndarray, resolution: int) -> np.ndarray:
    """Centre square crop, resized to the model's resolution (Lanczos)."""
    from PIL import Image

    image = rgb(image)
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    im = Image.fromarray(np.ascontiguousarray(image[top : top + s, left : left + s]))
    return np.asarray(im.resize((resolution, resolution), Image.Resampling.LANCZOS))


def _model_input(image: np.ndarray) -> torch.Tensor:
    return to_float(torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None])


# ---- the model kinds ------------------------------------------------------------------------------------------


class Sampler:
    """A generator z -> image (dcgan, wgan-gp; the base of the other sampling kinds)."""

    truncation = False  # has a psi slider
    conditional = False
    styles = False  # latent directions and style mixing
    encodes = False  # takes uploads (VAE)

    def __init__(self, g: torch.nn.Module, cfg, state: dict, path: Path):
        # Any: the generators of the registered models differ in their forward signature and extra methods
        self.g: Any = g.eval().requires_grad_(False)
        self.cfg, self.path = cfg, path
        self.kind: str = cfg.model
        self.resolution: int = int(state["resolution"])
        self.z_dim: int = cfg.z_dim
        self.steps: int = int(state.get("step", 0))
        self.label_names, self.label_values = label_schema(state)

    def describe(self) -> str:
        return f"{self.kind}, {self.resolution}x{self.resolution}, z {self.z_dim}, {self.steps} steps"

    def labels(self, seeds: Sequence[int], fixed: dict[str, str] | None) -> torch.Tensor | None:
        if fixed and any(v not in (None, "", RANDOM) for v in fixed.values()):
            raise ExploreError(f"this {self.kind} model is unconditional: it takes no attribute values")
        return None

    def _check_psi(self, psi: float) -> float:
        psi = _finite(psi, "psi")
        if psi != 1.0 and not self.truncation:
            raise ExploreError(f"a {self.kind} model has no truncation: psi must be 1")
        return psi

    @torch.no_grad()
    def _render(self, z: torch.Tensor, y: torch.Tensor | None, psi: float) -> np.ndarray:
        return to_uint8(self.g(z, y) if y is not None else self.g(z))

    def _draw(
        self,
        z: torch.Tensor,
        y: torch.Tensor | None,
        psi: float,
        direction: tuple[str, int, float] | None,
        mix: tuple[int, Sequence[str]] | None,
    ) -> np.ndarray:
        """(N, H, W, 3) uint8 images of latents z (labels y), steered by `direction` and `mix` (StyleGAN2's)."""
        if direction or mix:
            raise ExploreError(f"latent directions and style mixing need a StyleGAN2 model, this one is {self.kind}")
        return self._render(z, y, psi)

    def images(
        self,
        seeds: Sequence[int],
        psi: float = 1.0,
        labels: dict[str, str] | None = None,
        direction: tuple[str, int, float] | None = None,
        mix: tuple[int, Sequence[str]] | None = None,
    ) -> np.ndarray:
        """(N, H, W, 3) uint8: the image of each seed; `direction` and `mix` are StyleGAN2's extra sliders."""
        psi = self._check_psi(psi)
        return self._draw(_z(self.z_dim, seeds), self.labels(seeds, labels), psi, direction, mix)

    def image(
        self,
        seed: int,
        psi: float = 1.0,
        labels: dict[str, str] | None = None,
        direction: tuple[str, int, float] | None = None,
        mix: tuple[int, Sequence[str]] | None = None,
    ) -> np.ndarray:
        """The image of one seed."""
        return self.images([seed], psi, labels, direction, mix)[0]

    def grid(
        self,
        seed: int,
        n: int,
        psi: float = 1.0,
        labels: dict[str, str] | None = None,
        direction: tuple[str, int, float] | None = None,
        mix: tuple[int, Sequence[str]] | None = None,
    ) -> np.ndarray:
        """Seeds seed .. seed + n - 1 in a near-square grid (tile i: `image(seed + i, ...)`, steered alike)."""
        n = _count(n, "the number of samples")
        return grid(self.images(range(seed, seed + n), psi, labels, direction, mix))

    def interpolation(
        self,
        seed_a: int,
        seed_b: int,
        steps: int = 8,
        mode: str = "slerp",
        psi: float = 1.0,
        labels: dict[str, str] | None = None,
        direction: tuple[str, int, float] | None = None,
        mix: tuple[int, Sequence[str]] | None = None,
    ) -> np.ndarray:
        """A strip walking from seed_a's latent to seed_b's, every step steered as `image` steers one: its ends are
        `image` of seed_a and of seed_b. Labels (acgan) walk alike, from seed_a's to seed_b's (`blend`)."""
        steps = _count(steps, "the interpolation steps", 32)
        if steps < 2:
            raise ExploreError("an interpolation needs at least 2 steps")
        psi = self._check_psi(psi)
        za, zb = _z(self.z_dim, [seed_a, seed_b])
        path = interpolate(za, zb, steps, mode)
        return strip(self._draw(path, self.blend(self.labels([seed_a, seed_b], labels), steps), psi, direction, mix))

    def blend(self, ends: torch.Tensor | None, steps: int) -> torch.Tensor | None:
        """The labels of `steps` points between two label rows (none for an unconditional model)."""
        return None


class ConditionalSampler(Sampler):
    """acgan: attribute values (by name) drive the labels; attributes left 'random' come from the seed."""

    conditional = True

    def labels(self, seeds: Sequence[int], fixed: dict[str, str] | None) -> torch.Tensor:
        fixed = {k: v for k, v in (fixed or {}).items() if v not in (None, "", RANDOM)}
        for name, value in fixed.items():
            if name not in self.label_values:
                raise ExploreError(f"unknown attribute {name!r}; attributes: {', '.join(self.label_names)}")
            if value not in self.label_values[name]:
                raise ExploreError(f"unknown value {value!r} for {name}; valid: {', '.join(self.label_values[name])}")
        rows = seed_labels(seeds, [len(self.label_values[n]) for n in self.label_names])
        for a, n in enumerate(self.label_names):
            if n in fixed:
                rows[:, a] = self.label_values[n].index(fixed[n])
        return rows

    def blend(self, ends: torch.Tensor | None, steps: int) -> torch.Tensor:
        """(steps, one-hot width) float labels from the first row's one-hot encoding to the second's, linearly (the
        generator takes such rows as they are): an attribute the two rows share stays one-hot all the way."""
        from facegan.models.acgan import one_hot

        assert ends is not None  # a conditional model's labels
        a, b = one_hot(ends, [len(self.label_values[n]) for n in self.label_names])
        return torch.lerp(a[None], b[None], torch.linspace(0, 1, steps)[:, None])


class StyleSampler(Sampler):
    """stylegan2: truncation, latent directions (SeFa, GANSpace) and style mixing by layer group, all in w."""

    truncation = True
    styles = True

    def __init__(self, g, cfg, state, path):
        super().__init__(g, cfg, state, path)
        from facegan.sample_style import layer_groups

        self.groups = layer_groups(self.g)
        self.n_directions = min(10, self.z_dim)  # sliders per method
        self._directions: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def directions(self, method: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(directions (k, w_dim), one-sigma spread (k,)) of 'sefa' or 'ganspace', computed once per model."""
        if method not in self._directions:
            from facegan.sample_style import latent_directions

            try:
                self._directions[method] = latent_directions(self.g, method, self.n_directions)
            except ValueError as e:
                raise ExploreError(str(e)) from None
        return self._directions[method]

    @torch.no_grad()
    def styled(
        self,
        seed: int,
        psi: float = 1.0,
        direction: tuple[str, int, float] | None = None,
        mix: tuple[int, Sequence[str]] | None = None,
    ) -> torch.Tensor:
        """Per-layer w (1, n_latent, w_dim) of `seed`, steered (`steer`)."""
        return self.steer(_z(self.z_dim, [seed]), psi, direction, mix)

    @torch.no_grad()
    def steer(
        self,
        z: torch.Tensor,
        psi: float = 1.0,
        direction: tuple[str, int, float] | None = None,
        mix: tuple[int, Sequence[str]] | None = None,
    ) -> torch.Tensor:
        """Per-layer w (N, n_latent, w_dim) of latents z (N, z_dim): with `mix` = (seed2, groups) the layers of those
        groups take seed2's styles; with `direction` = (method, index, amount) w moves `amount` sigmas along it."""
        w = self.g.latents(z, psi)
        if mix and mix[1]:
            unknown = sorted(set(mix[1]) - set(self.groups))
            if unknown:
                raise ExploreError(f"unknown layer group {unknown[0]!r}; choose from {', '.join(self.groups)}")
            idx = [i for g in mix[1] for i in self.groups[g]]
            w[:, idx] = self.g.latents(_z(self.z_dim, [mix[0]]), psi)[:, idx]
        if direction and _finite(direction[2], "the direction amount"):
            method, index, amount = direction
            dirs, spread = self.directions(method)
            if not 0 <= int(index) < len(dirs):
                raise ExploreError(f"direction index {index} out of range 0..{len(dirs) - 1}")
            w = w + float(amount) * spread[int(index)] * dirs[int(index)]
        return w

    def _draw(self, z, y, psi, direction, mix):
        return self.render_w(self.steer(z, psi, direction, mix))

    @torch.no_grad()
    def render_w(self, w: torch.Tensor) -> np.ndarray:
        return to_uint8(self.g.synthesis(w))

    def direction_strip(
        self, seed: int, method: str, index: int, psi: float = 1.0, steps: int = 7, sigmas: float = 3.0
    ) -> np.ndarray:
        """The seed's image moved from -sigmas to +sigmas along one direction."""
        steps, sigmas = _count(steps, "the direction steps", 32), _finite(sigmas, "sigmas")
        return strip(
            np.concatenate(
                [
                    self.render_w(self.styled(seed, psi, (method, index, float(a))))
                    for a in np.linspace(-sigmas, sigmas, steps)
                ]
            )
        )


class VAESampler(Sampler):
    """vae: the decoder samples like a GAN; the encoder maps an uploaded face to its code."""

    encodes = True

    def __init__(self, g, cfg, state, path):
        super().__init__(g, cfg, state, path)
        from facegan.models import build_models
        from facegan.train.checkpoint import load_module

        _, enc = build_models(cfg, self.resolution, [])
        load_module(enc, state["D"], path, "a vae checkpoint whose encoder (D) weights")
        self.encoder = enc.eval().requires_grad_(False)

    @torch.no_grad()
    def encode(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """(mu (z_dim,), posterior std (z_dim,), the face as the model sees it)."""
        face = fit(image, self.resolution)
        mu, logvar = self.encoder(_model_input(face))
        return mu[0], (0.5 * logvar[0]).exp(), face

    @torch.no_grad()
    def reconstruct(self, image: np.ndarray, n: int = 8, radius: float = 1.0, seed: int = 0) -> dict[str, np.ndarray]:
        """input (resized), reconstruction (decoder of the mean code) and n neighbours: decoded codes
        mu + radius * sigma * eps, eps ~ N(0, I) fixed by `seed` (radius 1 = samples of q(z | x))."""
        n, radius = _count(n, "the number of neighbours"), _finite(radius, "the neighbour radius")
        mu, std, face = self.encode(image)
        # always MAX_BATCH rows, of which the first n: torch draws normals in blocks, so n rows of their own would
        # change the last neighbours' codes with n (neighbour i is the same whatever the neighbours slider says)
        try:
            noise = generator(seed)
        except SeedError as e:
            raise ExploreError(f"the neighbour {e}") from None
        eps = torch.randn(MAX_BATCH, self.z_dim, generator=noise)[:n]
        codes = torch.cat([mu[None], mu + radius * std * eps])
        out = to_uint8(self.g(codes))
        return {"input": face, "reconstruction": out[0], "neighbours": strip(out[1:])}


class Translator:
    """cyclegan: the two ResNet generators; an image of either domain translated to the other (and back)."""

    kind = "cyclegan"
    truncation = conditional = styles = encodes = False

    def __init__(self, state: dict, path: Path):
        from facegan.config import CycleGANConfig, ParamsError, parse_section
        from facegan.models.cyclegan import ResnetGenerator
        from facegan.train.checkpoint import config_error, load_module

        try:
            self.cfg = parse_section(CycleGANConfig, state["config"], "its cyclegan config")
        except ParamsError as e:
            raise config_error(path, "cyclegan", e) from None
        self.path = path
        self.resolution, self.steps = int(state["resolution"]), int(state.get("step", 0))
        self.nets = {}
        for key in ("G_ab", "G_ba"):
            net = ResnetGenerator(self.cfg.g_channels, self.cfg.res_blocks)
            load_module(net, state[key], path, f"a cyclegan checkpoint whose {key} weights")
            self.nets[key[2:]] = net.eval().requires_grad_(False)
        self.a, self.b = self.cfg.a, self.cfg.b

    def describe(self) -> str:
        return f"cyclegan {self.a} <-> {self.b}, {self.resolution}x{self.resolution}, {self.steps} steps"

    @torch.no_grad()
    def translate(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """input (resized); the face read as `a` translated to `b` and back, and read as `b` translated to `a`
        and back."""
        face = fit(image, self.resolution)
        x = _model_input(face)
        ab, ba = self.nets["ab"](x), self.nets["ba"](x)
        back_a, back_b = self.nets["ba"](ab), self.nets["ab"](ba)
        ims = to_uint8(torch.cat([ab, back_a, ba, back_b]))
        return {"input": face, "a_to_b": ims[0], "a_to_b_to_a": ims[1], "b_to_a": ims[2], "b_to_a_to_b": ims[3]}


Model = Sampler | Translator


def sampler_class(spec) -> type[Sampler]:
    """The explorer view of a registered model (facegan.models.ModelSpec): by what the model is, not its name."""
    if spec.style:
        return StyleSampler
    if spec.conditional:
        return ConditionalSampler
    return Sampler if spec.adversarial else VAESampler


def load_model(path: Path) -> Model:
    """The explorer wrapper of a checkpoint of `facegan train` (any registered model) or of the cyclegan stage;
    a missing, unreadable, old-format or foreign file is a FaceganError naming it."""
    from facegan.train.checkpoint import generator_of, load_checkpoint

    path = Path(path)
    state = load_checkpoint(path)
    if "G_ab" in state and "G_ba" in state:
        model: Model = Translator(state, path)
    elif "G" in state and isinstance(state.get("config"), dict):
        g, cfg = generator_of(state, path)
        model = sampler_class(cfg.spec)(g, cfg, state, path)
    else:
        raise ExploreError(
            f"{path} holds no generator the explorer knows (it holds: {', '.join(sorted(state)[:6])}); "
            "give a checkpoint.pt written by `facegan train` or the cyclegan stage"
        )
    log.info("loaded %s from %s", model.describe(), path)
    return model


# ---- names of latent directions ---------------------------------------------------------------------------------


class DirectionNames:
    """User names of latent directions, kept beside the checkpoint as <stem>.directions.json
    ({method: {index: name}}), so named sliders persist across sessions."""

    def __init__(self, checkpoint: Path):
        self.path = Path(checkpoint).with_name(Path(checkpoint).stem + ".directions.json")

    def _read(self) -> tuple[dict[str, dict[int, str]], list[str]]:
        """The names the file holds, and what it holds that is not a name (a file that is not a JSON mapping of
        {method: {index: name}}: everything)."""
        if not self.path.is_file():
            return {}, []
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            return {}, [f"the file ({e})"]
        if not isinstance(raw, dict):
            return {}, [f"the file (a JSON {type(raw).__name__}, not a mapping)"]
        names: dict[str, dict[int, str]] = {}
        bad: list[str] = []
        for method, entries in raw.items():
            if not isinstance(entries, dict):
                bad.append(f"{method!r}")
                continue
            for index, name in entries.items():
                if isinstance(name, str) and index.isascii() and index.isdecimal() and str(int(index)) == index:
                    names.setdefault(method, {})[int(index)] = name
                else:
                    bad.append(f"{method!r}: {index!r}")
        return names, bad

    def load(self) -> dict[str, dict[int, str]]:
        """The names; entries that are not {index: name} are left out with a warning (the page still works)."""
        names, bad = self._read()
        if bad:
            log.warning("direction names in %s: ignoring %s", self.path, ", ".join(bad))
        return names

    def save(self, method: str, index: int, name: str) -> dict[str, dict[int, str]]:
        """Set (or, with an empty name, clear) one name; returns all names."""
        if int(index) < 0:  # written as "-1", it would be what the file's reader refuses, and block every later save
            raise ExploreError(f"direction index {index}: directions are numbered from 0")
        names, bad = self._read()
        if bad:  # rewriting the file would drop what it holds beyond the names read
            raise ExploreError(
                f"cannot save the name: {self.path} holds what is not a direction name ({', '.join(bad)}); "
                "fix or remove that, the names it holds are kept until then"
            )
        name = direction_name(name)
        if name:
            names.setdefault(method, {})[int(index)] = name
        else:
            names.get(method, {}).pop(int(index), None)
        payload = {m: {str(i): n for i, n in sorted(v.items())} for m, v in names.items() if v}
        try:
            write_text(self.path, json.dumps(payload, indent=1))
        except OSError as e:
            raise ExploreError(f"cannot save direction names to {self.path}: {e.strerror or e}") from None
        return names


# ---- where models come from: a checkpoint path, a registered model, an MLflow run ---------------------------------


@dataclass
class Source:
    """A model reference resolved to a local checkpoint, with its MLflow run and registry version when known."""

    ref: str
    checkpoint: Path
    run_id: str | None = None
    registered: tuple[str, str] | None = None  # (registered model name, version)

    @property
    def label(self) -> str:
        if self.registered:
            return f"{self.registered[0]} v{self.registered[1]}"
        return str(self.checkpoint)


def tracked(ref: str) -> bool:
    """Whether `ref` names a model in the tracking store: models:/NAME@ALIAS (or /VERSION), or an MLflow run id."""
    return ref.startswith("models:/") or (len(ref) == 32 and all(c in "0123456789abcdef" for c in ref))


def resolve(ref: str, tracking=None, files: bool = True, box: str = "a model") -> Source:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION`, an MLflow run id (of a pipeline, or one of its stages) or,
    with `files`, a checkpoint path -> Source. ExploreError when it names nothing usable (`box`: where it was typed)."""
    ref = (ref or "").strip()
    if not ref:
        kinds = "models:/NAME@ALIAS, an MLflow run id" + (" or a checkpoint path" if files else "")
        raise ExploreError(f"give {box}: {kinds}")
    path = Path(ref).expanduser()
    if files and path.is_file():
        return Source(ref, path)
    if files and path.is_dir():
        raise ExploreError(f"{ref}: a folder; give the checkpoint file in it (e.g. {path / 'checkpoint.pt'})")
    if not tracked(ref):
        raise ExploreError(f"unknown model {ref!r}: no such file, and not a models:/NAME@ALIAS URI or an MLflow run id")
    from facegan import track
    from facegan.config import TrackingConfig

    try:
        found = (
            track.registry_checkpoint(ref, tracking or TrackingConfig())
            if ref.startswith("models:/")
            else track.run_checkpoint(ref, tracking or TrackingConfig())
        )
    except track.ModelNotFound as e:
        raise ExploreError(str(e)) from None
    return Source(ref, found["checkpoint"], found["run_id"], (found["name"], found["version"]))


class Models:
    """Models by reference, each loaded once and kept while it is among the `keep` used last (the page's model and
    the compare tab's two); a checkpoint file written again since it was loaded (a training still running) is
    loaded afresh and its earlier copy dropped."""

    def __init__(self, tracking=None, keep: int = 3, paths: bool = True):
        self.tracking, self.keep = tracking, keep
        self.paths = paths  # whether a page may name checkpoint files (not when served beyond this machine)
        self._by_key: OrderedDict[tuple, tuple[Model, Source]] = OrderedDict()

    @staticmethod
    def _key(src: Source) -> tuple:
        if src.registered:
            return (*src.registered, src.run_id)
        return (str(src.checkpoint.resolve()), src.checkpoint.stat().st_mtime_ns)

    def get(self, ref: str, files: bool = True, box: str = "a model") -> tuple[Model, Source]:
        src = resolve(ref, self.tracking, files, box)
        key = self._key(src)
        if key in self._by_key:
            self._by_key.move_to_end(key)
            return self._by_key[key]
        for old in [k for k in self._by_key if not src.registered and k[0] == key[0]]:  # the file's older contents
            del self._by_key[old]
        found = self._by_key[key] = (load_model(src.checkpoint), src)
        while len(self._by_key) > self.keep:
            self._by_key.popitem(last=False)
        return found

    def from_page(self, ref: str, served: Source, box: str = "a model") -> tuple[Model, Source]:
        """`get` for a reference typed on the page (in `box`): with `paths` off only the served model's own reference
        and tracked ones (`tracked`), so that a visitor from another machine cannot have any file on this one read."""
        ref = (ref or "").strip()
        if ref and not self.paths and ref != served.ref and not tracked(ref):
            raise ExploreError(
                "this explorer is served beyond this machine (--host): the page takes registered models "
                "(models:/NAME@ALIAS) and MLflow run ids, not checkpoint paths (serve on 127.0.0.1 to compare files)"
            )
        return self.get(ref, self.paths or (ref == served.ref and served.run_id is None), box)  # its own file

    def names(self, src: Source):
        """Where the direction names of this model live: tags of its registry version, else a file beside it."""
        if src.registered:
            from facegan import track

            return track.RegistryNames(*src.registered, self.tracking)
        return DirectionNames(src.checkpoint)

    def rows(self, sources: Sequence[Source]) -> list[dict]:
        """The FID comparison rows (facegan.runs_table) of the sources' pipeline runs ({} for untracked ones)."""
        ids = [s.run_id for s in sources]
        if not any(ids):
            return [{} for _ in sources]
        from facegan import track

        try:
            return track.run_rows(ids, self.tracking)
        except track.ModelNotFound as e:
            raise ExploreError(str(e)) from None
