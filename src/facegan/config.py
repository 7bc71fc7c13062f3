"""Typed configuration: params.yaml validated into pydantic models before any work starts.

Every section forbids unknown keys, so a typo stops the run with a message naming the key,
the bad value and what is allowed (see `ParamsError`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Hashable
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from facegan.errors import CheckpointError, ParamsError, flat
from facegan.models import MODELS, model_spec


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, nested mappings merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _numeric(annotation: Any) -> bool:
    """A number (or a number or null) and not a flag: `int`, `float`, `float | None`, `Annotated[int, ...]`."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    args = set(get_args(annotation)) if get_origin(annotation) in (Union, UnionType) else {annotation}
    return bool(args) and args - {NoneType} <= {int, float}


def _flags_marked(annotation: Any, v: Any) -> Any:
    """`v` with each YAML true/false where `annotation` wants a number wrapped in `_Flag`: the value itself, or
    the items of a list or tuple of numbers (`seeds: [true]`, `fill: [true, 255, 255]`)."""
    if isinstance(v, bool):
        return _Flag(v) if _numeric(annotation) else v
    if isinstance(v, list | tuple) and get_origin(annotation) in (list, tuple):
        items = [a for a in get_args(annotation) if a is not Ellipsis]
        if items and all(_numeric(a) for a in items):
            return [_Flag(x) if isinstance(x, bool) else x for x in v]
    return v


class Section(BaseModel):
    """Base for every params section: unknown keys are errors, values are immutable, and a YAML true/false
    given for a number is an error (pydantic would read it as 1 or 0)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_flag_for_a_number(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {k: _flags_marked(fields[k].annotation, v) if k in fields else v for k, v in data.items()}


class _Flag:
    """A YAML true/false given for a number: fails the number's own validation, shown as what was written."""

    def __init__(self, value: bool):
        self.value = value

    def __repr__(self) -> str:
        return f"{str(self.value).lower()} (a flag, not a number)"


def _flag_or(*words: str) -> BeforeValidator:
    """A field that is true, false or one of `words`, with one error message for anything else (pydantic
    would report the bool and the literal branch of the union separately)."""

    def check(v: Any) -> Any:
        if isinstance(v, bool) or v in words:
            return v
        *rest, last = ["true", "false", *map(repr, words)]
        raise ValueError(f"expected {', '.join(rest)} or {last}")

    return BeforeValidator(check)


def _amp(v: Any) -> Any:
    """YAML reads an unquoted `off` as false: that is amp 'off'; true names no precision."""
    if v is False:
        return "off"
    if v is True:
        raise ValueError("true names no precision: use 'bf16' or 'fp16' ('off' for float32)")
    return v


# ---- datasets -------------------------------------------------------------------------------


class CartoonSource(Section):
    """The embedded default: cartoon faces drawn by `facegan.data.cartoon`."""

    kind: Literal["cartoon"] = "cartoon"
    n: int = Field(2000, ge=1, le=1_000_000, description="number of images")
    size: int = Field(256, ge=64, le=2048, description="raw image side in pixels")
    seed: int = Field(0, ge=0)
    style: Literal["color", "sketch"] = Field("color", description="sketch: sepia pencil drawings (a second look)")
    max_rotation: float = Field(25.0, ge=0, le=180, description="in-plane rotation, degrees (+/-)")
    face_scale: tuple[float, float] = Field(
        (0.22, 0.45), description="face width as a fraction of the image side (min, max)"
    )

    @field_validator("face_scale")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0.05 <= lo <= hi <= 0.9:
            raise ValueError("need 0.05 <= min <= max <= 0.9")
        return v


class FolderSource(Section):
    """Photos already in data/raw/<name>/images (added with `facegan dataset add`)."""

    kind: Literal["folder"]


# detections scoring lower are dropped, per backend, when detect.min_score is null (dlib's scores; 0-1 confidences)
DEFAULT_MIN_SCORE = {"hog": 0.2, "cnn": 0.2, "yunet": 0.6, "blazeface": 0.5}


class DetectConfig(Section):
    backend: Literal["annotations", "hog", "cnn", "haar", "anime", "blazeface", "yunet"] = "annotations"
    annotations: str = Field("annotations.json", description="boxes file inside the raw folder")
    cascade: str | None = Field(None, description="anime/haar: cascade XML path (anime: lbpcascade_animeface.xml)")
    model: str | None = Field(
        None,
        description="blazeface: the .pth (anchors .npy beside it); yunet: the .onnx; "
        "null: the standard cache (torch hub checkpoints/; ~/.cache/facegan/detectors/)",
    )
    blazeface: Literal["front", "back"] = Field(
        "back", description="BlazeFace model: front (128 px, close faces) or back (256 px, faces further away)"
    )
    upsample: int = Field(1, ge=0, le=4, description="hog/cnn: times the image is upsampled to find small faces")
    max_side: int = Field(1600, ge=64, description="images are downscaled to this side for detection only")
    min_score: float | None = Field(
        None,
        allow_inf_nan=False,
        description="detections scoring lower are dropped (hog/cnn: dlib's scores; "
        "yunet/blazeface: confidence 0-1); null: 0.2 hog/cnn, 0.6 yunet, 0.5 blazeface",
    )
    margin: float = Field(0.6, ge=0, le=3, description="context kept around the box, per side, x box size")
    square: bool = Field(True, description="square crops (side = the box's longer side); else the box's aspect")
    min_size: int = Field(16, ge=1, description="smaller faces are rejected (pixels)")
    multi_face: Literal["largest", "all"] = "largest"

    @model_validator(mode="after")
    def _anime_needs_cascade(self) -> DetectConfig:
        if self.backend == "anime" and not self.cascade:
            raise ValueError("backend 'anime' needs detect.cascade: the path of lbpcascade_animeface.xml")
        if self.backend in ("yunet", "blazeface") and self.min_score is not None and not 0 <= self.min_score <= 1:
            # YuNet failed inside OpenCV, blamed on its model file; BlazeFace kept or dropped every face
            raise ValueError(f"min_score {self.min_score}: {self.backend}'s scores are confidences from 0 to 1")
        return self

    @property
    def score_threshold(self) -> float:
        """min_score, or the backend's default (annotations and cascades have no scores: all kept)."""
        return self.min_score if self.min_score is not None else DEFAULT_MIN_SCORE.get(self.backend, 0.0)


class VerifyConfig(Section):
    """Keep only faces of one identity: dlib encodings compared with a folder of reference faces."""

    backend: Literal["none", "dlib"] = "none"
    references: str | None = Field(
        None, description="folder of reference photos (relative to the raw folder or absolute)"
    )
    tolerance: float = Field(0.6, gt=0, le=2, description="max distance to the closest reference encoding")

    @model_validator(mode="after")
    def _references(self) -> VerifyConfig:
        if self.backend == "dlib" and not self.references:
            raise ValueError("backend 'dlib' needs references: a folder of photos of the person to keep")
        return self


class AlignConfig(Section):
    backend: Literal["annotations", "dlib68", "fan", "yunet5", "box"] = "annotations"
    annotations: str = "annotations.json"
    model: str | None = Field(None, description="yunet5: the YuNet .onnx (null: ~/.cache/facegan/detectors/)")
    size: int = Field(128, ge=16, le=2048, description="aligned output side (pixels)")
    template: Literal["five", "ffhq"] = Field(
        "five", description="five: 5 points onto a template (eye_distance, eye_y); ffhq: FFHQ's eyes+mouth crop"
    )
    eye_distance: float = Field(0.2, gt=0.05, lt=0.8, description="eye distance / output side")
    eye_y: float = Field(0.45, gt=0.1, lt=0.9, description="eye line height / output side")


class MatteConfig(Section):
    backend: Literal["grabcut", "rembg", "none"] = "grabcut"
    iterations: int = Field(4, ge=1, le=20, description="grabcut iterations")
    model: str = Field("u2net", description="rembg model name (file <model>.onnx in U2NET_HOME)")
    fill: tuple[int, int, int] = Field((255, 255, 255), description="background colour, RGB 0-255")
    rgba: bool = Field(False, description="also keep each cut-out with its soft alpha as rgba/<name>.png")

    @field_validator("fill")
    @classmethod
    def _rgb(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 0 <= c <= 255 for c in v):
            raise ValueError("each channel must be in 0..255")
        return v


class UpscaleConfig(Section):
    backend: Literal["lanczos", "opencv"] = "lanczos"
    size: int = Field(128, ge=16, le=2048, description="images below this side are upscaled to it")
    model: Literal["FSRCNN", "FSRCNN-small", "ESPCN", "EDSR", "LapSRN"] = Field(
        "FSRCNN", description="opencv dnn_superres model"
    )
    scale: Literal[2, 3, 4, 8] = Field(2, description="the model's factor (file <model>_x<scale>.pb)")
    models_dir: str | None = Field(
        None,
        description="folder holding the .pb files (null: $FACEGAN_MODELS/superres, default ~/.cache/facegan/superres)",
    )


class QualityConfig(Section):
    min_sharpness: float = Field(
        10.0, ge=0, description="variance of the Laplacian at 128 px; blurrier faces are rejected"
    )
    min_face: int = Field(32, ge=0, description="faces whose detected box was smaller in the photo are rejected (px)")
    max_hash_distance: int = Field(
        16, ge=-1, le=256, description="near-duplicates: photo-hash bits apart, of 256 (-1 = off)"
    )


class PackConfig(Section):
    resolution: int = Field(64, description="training resolution (square, power of two)")
    labels: str | None = Field("labels.csv", description="label CSV inside the raw folder, or null")

    @field_validator("resolution")
    @classmethod
    def _pow2(cls, v: int) -> int:
        if v < 8 or v > 2048 or v & (v - 1):
            raise ValueError("must be a power of two between 8 and 2048")
        return v


class DatasetConfig(Section):
    source: CartoonSource | FolderSource = Field(discriminator="kind")
    detect: DetectConfig = DetectConfig()
    verify: VerifyConfig = VerifyConfig()
    align: AlignConfig = AlignConfig()
    matte: MatteConfig = MatteConfig()
    upscale: UpscaleConfig = UpscaleConfig()
    quality: QualityConfig = QualityConfig()
    pack: PackConfig = PackConfig()

    @model_validator(mode="after")
    def _sizes(self) -> DatasetConfig:
        if self.pack.resolution > self.upscale.size:
            raise ValueError(
                f"pack.resolution ({self.pack.resolution}) is larger than upscale.size "
                f"({self.upscale.size}): training images would be blown up from smaller crops"
            )
        return self


# ---- training and evaluation ----------------------------------------------------------------


Extractor = Literal["inception", "dlib", "attributes"]  # feature spaces for Frechet distances
GP_LOSSES = ("wgan-gp", "wgan-div")  # gradient penalties are per-sample: no batch norm in D
# D's output halfway between its targets for real and fake images, where it cannot tell them apart: ADA's adaptive
# p counts sign(D(real) - level). A Wasserstein critic's output has no such level (any offset is as good).
D_LEVEL: dict[str, float] = {"minimax": 0.0, "nonsaturating": 0.0, "hinge": 0.0, "lsgan": 0.5}


class AdaConfig(Section):
    """Adaptive discriminator augmentation (facegan.augment.ada)."""

    enabled: bool = False
    target: float = Field(
        0.6, gt=0, lt=1, description="target of r_t = E[sign(D(real) - level)], level 0 (0.5 for lsgan)"
    )
    interval: int = Field(4, ge=1, description="D updates between adjustments of p (steps x n_critic)")
    speed_kimg: float = Field(100.0, gt=0, description="thousands of images for p to move from 0 to 1 (paper: 500)")
    initial_p: float = Field(
        0.0, ge=0, le=1, description="p at the start (fine-tuning from an ADA run: that run's p instead)"
    )
    fixed_p: float | None = Field(None, ge=0, le=1, description="a constant p instead of the adaptive one")


STYLEGAN2_PRESETS: dict[str, dict[str, Any]] = {
    # channel_base / resolution, capped at channel_max, is the width at each resolution
    "tiny": {"channel_base": 512, "channel_max": 32, "mapping_layers": 2},  # unit tests
    "cpu": {"channel_base": 2048, "channel_max": 64, "mapping_layers": 4},  # the CPU default pipeline
    "paper": {"channel_base": 32768, "channel_max": 512, "mapping_layers": 8},  # config-f (z_dim 512)
}


class StyleGAN2Config(Section):
    """Architecture of model `stylegan2`; `preset` fills the width keys not given. Its regularisers are
    `train.r1` and `train.path_length` (usable by every GAN)."""

    preset: Literal["tiny", "cpu", "paper"] = "cpu"
    channel_base: int = Field(2048, ge=16)
    channel_max: int = Field(64, ge=1, le=2048)
    mapping_layers: int = Field(4, ge=1, le=16)
    lr_mapping: float = Field(0.01, gt=0, le=1, description="learning-rate multiplier of the mapping network")
    style_mixing: float = Field(0.9, ge=0, le=1, description="probability of style mixing per step")
    amp_blocks: int = Field(
        0, ge=0, le=9, description="with train.amp: only G's and D's blocks of the N highest resolutions run in the "
        "amp dtype, the mapping network, the low-resolution blocks and D's epilogue in float32 (stylegan2-ada: 4); "
        "0 = every layer follows train.amp")  # fmt: skip
    conv_clamp: float | None = Field(
        None,
        gt=0,
        description="clamp every conv activation to +-conv_clamp (stylegan2-ada: 256, with fp16); null = off",
    )

    MOVED: ClassVar[dict[str, str]] = {
        "r1_gamma": "r1.gamma",
        "r1_every": "r1.every",
        "pl_weight": "path_length.weight",
        "pl_every": "path_length.every",
    }

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            moved = [f"stylegan2.{k} is now {cls.MOVED[k]}" for k in data if k in cls.MOVED]
            if moved:
                raise ValueError(
                    "; ".join(moved) + " (regularisers of every GAN, beside `stylegan2` in the same section)"
                )
            preset = STYLEGAN2_PRESETS.get(data.get("preset", "cpu"), {})
            data = {**preset, **data}
        return data


class R1Config(Section):
    """R1 (Mescheder et al. 2018): gamma/2 * |grad D(real)|^2, lazily every N steps (StyleGAN2's default)."""

    gamma: float | None = Field(
        None, ge=0, description="R1 weight gamma; 0 = off; null = the model's default (stylegan2: 10, the others: off)"
    )
    every: int = Field(16, ge=1, description="lazy regularisation: a separate D update every N steps")


class PathLengthConfig(Section):
    """Path-length regularisation (Karras et al. 2020): on w for style-based G, on z otherwise."""

    weight: float = Field(0.0, ge=0, description="weight (paper: 2; 0 = off)")
    every: int = Field(4, ge=1, description="lazy regularisation: a separate G update every N steps")


def _unique_policies(v: list[str]) -> list[str]:
    if len(set(v)) != len(v):
        raise ValueError("diffaugment lists a policy twice")
    return v


def _expanded(path: Path) -> Path:
    """`~` and `~user` as a shell reads them; an unknown user (or no home folder) is the value's error."""
    try:
        return path.expanduser()
    except RuntimeError as e:  # pydantic turns only a ValueError into the params' error
        raise ValueError(f"{path}: {e}") from None


UserPath = Annotated[Path, AfterValidator(_expanded)]  # a file path param: `~/x` is the home's
DiffAugmentPolicies = Annotated[list[Literal["color", "translation", "cutout"]], AfterValidator(_unique_policies)]


class VAEConfig(Section):
    """Model `vae`: conv encoder (D's layout) -> (mu, log variance); G's deconv net as the decoder."""

    kl_weight: float = Field(1.0, ge=0, description="beta: loss = squared error per image + kl_weight * KL")
    kl_warmup: int = Field(0, ge=0, description="steps over which the KL weight ramps up linearly from 0")


class RunSettings(Section):
    """Runtime settings shared by every trainer (`train`, `cyclegan`): where and how fast to run, seeds and
    cadence. `RESUME_NEUTRAL` lists the ones a checkpoint may be resumed under with another value."""

    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 = torch default")
    deterministic: Annotated[bool | Literal["auto"], _flag_or("auto")] = Field(
        "auto",
        description="true: deterministic kernels (bitwise resume on CPU), every random number from the host's "
        "per-step stream (a seed draws the same on CPU and CUDA); false: cudnn.benchmark + TF32 on CUDA, noise "
        "maps drawn on the device (per-step seeded); auto: true on CPU, false on CUDA",
    )
    amp: Annotated[Literal["off", "bf16", "fp16"], BeforeValidator(_amp)] = Field(
        "off", description="mixed precision on CUDA (fp16 with grad scaling)"
    )
    channels_last: bool = Field(False, description="NHWC memory format for the conv nets")
    compile: Annotated[
        bool | Literal["default", "reduce-overhead", "max-autotune"],
        _flag_or("default", "reduce-overhead", "max-autotune"),
    ] = Field(
        False,
        description="torch.compile the nets (true = mode 'default'); 'reduce-overhead' also replays CUDA graphs, "
        "for small nets whose steps are launch-bound on a GPU; 'max-autotune' tunes kernels and replays CUDA graphs",
    )
    loader_threads: int = Field(2, ge=1, le=64, description="threads decoding the packed ZIP")
    memory_budget_gb: float = Field(
        8.0,
        gt=0,
        description="a decoded training set larger than this (times the run's processes on the host: each DDP "
        "rank holds one) is memory-mapped from a file decoded once (in FACEGAN_CACHE, default ~/.cache/facegan) "
        "instead of held in memory",
    )
    checkpoint_every: int = Field(100, ge=1)
    sample_every: int = Field(100, ge=1)

    RESUME_NEUTRAL: ClassVar[frozenset[str]] = frozenset(
        {"device", "threads", "loader_threads", "memory_budget_gb", "checkpoint_every", "sample_every"}
    )

    def differences(self, saved: dict[str, Any], section: str) -> list[str]:
        """`<section>.<key>: then -> now` for each key of a checkpoint's config that differs from this one in a way
        that changes the maths (keys in RESUME_NEUTRAL may differ)."""
        now, then = flatten(self), flatten(saved)
        return [
            f"{section}.{k}: {then.get(k, '(absent)')!r} -> {now.get(k, '(absent)')!r}"
            for k in sorted(set(now) | set(then))
            if now.get(k) != then.get(k) and k.split(".")[0] not in self.RESUME_NEUTRAL
        ]

    def check_resumable(self, saved: dict[str, Any], section: str) -> None:
        """Refuse a checkpoint whose config `differences` from this one; the message names each differing key."""
        if differences := self.differences(saved, section):
            raise CheckpointError(
                f"the checkpoint was written with a different {section} config "
                f"({'; '.join(differences)}): remove it or restore the config"
            )


class TrainConfig(RunSettings):
    model: str = Field("dcgan", description="a name from facegan.models.MODELS")
    loss: Literal["minimax", "nonsaturating", "hinge", "lsgan", "wgan", "wgan-gp", "wgan-div"] = "nonsaturating"
    g_arch: Literal["deconv", "upsample"] = Field("deconv", description="transposed convs, or nearest upsample + conv")
    d_norm: Literal["auto", "batch", "instance", "layer", "none"] = Field(
        "auto",
        description="auto: the model's default (batch norm; layer norm for wgan-gp) or layer norm for "
        "gradient-penalty losses",
    )
    d_variant: Literal["plain", "sn", "projection"] = Field(
        "plain", description="sn: spectral norm on every D layer; projection: SN + label projection (acgan)"
    )
    label_input: Literal["concat", "noconcat"] = Field(
        "concat", description="acgan G: labels at the input and again at the first hidden layer, or input only"
    )
    aux_head: Literal["softmax", "multihot"] = Field(
        "softmax", description="acgan D: one softmax head per attribute, or one multi-hot sigmoid head"
    )
    aux_weight: float = Field(1.0, ge=0, description="weight of the auxiliary classification loss")
    z_dim: int = Field(100, ge=1, le=4096)
    g_channels: int = Field(32, ge=4, le=1024, description="width of G's last hidden layer (ngf)")
    d_channels: int = Field(32, ge=4, le=1024, description="width of D's first layer (ndf)")
    steps: int = Field(400, ge=1, description="generator updates")
    n_critic: int = Field(1, ge=1, le=100, description="discriminator updates per generator update")
    batch_size: int = Field(64, ge=1, le=4096)
    optimizer: Literal["adam", "rmsprop"] = "adam"
    lr_g: float = Field(2e-4, gt=0, lt=1)
    lr_d: float = Field(2e-4, gt=0, lt=1, description="TTUR: set different from lr_g")
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    gp_weight: float = Field(10.0, ge=0, description="wgan-gp lambda")
    div_k: float = Field(2.0, ge=0, description="wgan-div k")
    div_p: float = Field(6.0, gt=0, description="wgan-div p")
    clip: float = Field(0.01, gt=0, description="wgan weight clipping bound")
    ema: float = Field(0.0, ge=0, lt=1, description="EMA decay of G's weights (0 = off), e.g. 0.999")
    ema_rampup: float | None = Field(
        0.05,
        gt=0,
        le=1,
        description="EMA warm-up (stylegan2-ada's ema_rampup): the decay at step t is min(ema, 0.5^(1/(r*t))), a "
        "half-life of r*t steps, so the average forgets G's random start (null: ema from step 0)",
    )
    diffaugment: DiffAugmentPolicies = Field([], description="DiffAugment policies applied to every image D sees")
    ada: AdaConfig = AdaConfig()
    r1: R1Config = R1Config()
    path_length: PathLengthConfig = PathLengthConfig()
    stylegan2: StyleGAN2Config = StyleGAN2Config()
    vae: VAEConfig = VAEConfig()
    freeze_d: int = Field(0, ge=0, description="FreezeD: the first K discriminator blocks are not trained")
    init_from: UserPath | None = Field(
        None, description="transfer learning: start from this checkpoint (facegan or rosinality stylegan2 .pt)"
    )
    mirror: bool = Field(True, description="random horizontal flips of real images")
    max_images: int | None = Field(
        None, ge=1, description="train on a seeded subset of this many packed images (small-data studies); null = all"
    )
    subset_seed: int = Field(0, ge=0, description="seed of the max_images subset (fixed across runs compared)")
    fid_every: int = Field(0, ge=0, description="Frechet distance at fixed latents every N steps (0 = off)")
    fid_samples: int = Field(256, ge=2, description="generated images per in-training Frechet distance")
    fid_extractor: Extractor = Field("dlib", description="extractor of the in-training Frechet distance")
    nproc: int = Field(1, ge=1, le=64, description="processes (GPUs) for DDP via torchrun; batch_size is global")
    graph: bool = Field(
        False,
        description="CUDA: capture a whole training step (D's and G's updates, Adam, EMA) as one CUDA graph after "
        "3 eager steps and replay it each step: one launch instead of hundreds, for small nets whose steps are "
        "launch-bound. For GANs whose step draws only its batches, latents and labels on the host (dcgan, acgan, "
        "wgan-gp's nets with a loss without penalty); on CPU each step runs eagerly, with the same values",
    )

    # more steps continue the same run (no schedule depends on the total); the in-training FID only observes
    RESUME_NEUTRAL: ClassVar[frozenset[str]] = RunSettings.RESUME_NEUTRAL | {
        "steps",
        "fid_every",
        "fid_samples",
        "fid_extractor",
        "graph",  # the same kernels, launched from a graph
    }

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        model_spec(v)  # unknown -> the valid names
        return v

    @property
    def spec(self):  # -> facegan.models.ModelSpec
        return MODELS[self.model]

    @property
    def conditional(self) -> bool:
        return self.spec.conditional

    @property
    def r1_gamma(self) -> float:
        """R1's gamma: r1.gamma, or the model's default when it is null."""
        return self.spec.r1_gamma if self.r1.gamma is None else self.r1.gamma

    @property
    def resolved_d_norm(self) -> str:
        if self.d_norm != "auto":
            return self.d_norm
        return "layer" if self.loss in GP_LOSSES else self.spec.d_norm

    def unread(self) -> list[str]:
        """Settings given other than their default that this model's nets do not read (StyleGAN2 builds its own from
        `stylegan2`; only conditional models take labels): `run_train` warns of them, once."""
        names = ["label_input", "aux_head", "aux_weight"] if not self.conditional else []
        if self.spec.style:
            names += ["g_arch", "d_norm", "d_variant", "g_channels", "d_channels"]
        fields = type(self).model_fields
        return [n for n in names if getattr(self, n) != fields[n].default]

    def loss_note(self) -> str | None:
        """A warning for `model: wgan-gp` with a loss that is no Wasserstein critic's: the model names the nets (the
        DCGAN G, a critic without batch norm) and `loss` the objective, so such a run is not WGAN-GP, though named
        so (a legitimate choice, e.g. hinge on those nets: `run_train` warns, once, and trains)."""
        if self.model == "wgan-gp" and self.loss in D_LEVEL:
            return (
                f"model wgan-gp trains with loss {self.loss}, not wgan-gp (the model sets the nets, train.loss the "
                "objective): set train.loss: wgan-gp for WGAN-GP"
            )
        return None

    def _check_ada_level(self) -> None:
        if self.loss not in D_LEVEL:
            raise ValueError(
                f"ada: its adaptive p follows r_t = E[sign(D(real) - level)], the level being D's output between real "
                f"and fake (losses {', '.join(D_LEVEL)}); a {self.loss} critic's has none: set ada.fixed_p for a "
                "constant p, or use one of those losses"
            )

    @model_validator(mode="after")
    def _compatible(self, info: ValidationInfo) -> TrainConfig:
        if self.loss in GP_LOSSES and self.resolved_d_norm == "batch":
            raise ValueError(
                f"loss {self.loss} penalises per-sample gradients: d_norm 'batch' is not allowed "
                "(use layer, instance or none)"
            )
        # rules of D's training only, not checked again for a checkpoint's saved config (its G is loaded, made by
        # an earlier facegan that took them)
        saved = bool(info.context and info.context.get("saved"))
        # (d_norm auto stays the model's batch norm with R1: a checkpoint of either D says "auto", and a resume or
        # a fine-tune would load one D's weights into the other)
        norm = self.resolved_d_norm
        if not saved and self.spec.adversarial and not self.spec.style and self.r1_gamma and norm == "batch":
            raise ValueError(  # batch statistics tie each logit to the batch's other images
                "r1.gamma penalises per-sample gradients of D: a batch-norm D is not allowed with it (set d_norm "
                f"layer, instance or none{'; auto is batch norm for this model' if self.d_norm == 'auto' else ''})"
            )
        if self.d_variant == "projection" and not self.conditional:
            raise ValueError("d_variant 'projection' needs labels: use it with model 'acgan'")
        if self.diffaugment and self.ada.enabled:
            raise ValueError("choose one augmentation: diffaugment or ada.enabled, not both")
        if not saved and self.ada.enabled and self.ada.fixed_p is None and self.spec.adversarial:
            self._check_ada_level()
        if self.freeze_d and self.init_from is None:
            raise ValueError(
                "freeze_d freezes pretrained D blocks: set init_from to the pretrained checkpoint (the transfer study "
                "sets it for each run: give freeze_d in a row of transfer.runs)"
            )
        if self.batch_size % self.nproc:
            raise ValueError(
                f"batch_size {self.batch_size} is the global batch, split over nproc {self.nproc} processes: "
                "make it a multiple of nproc"
            )
        if self.graph:
            self._check_graphable()
        if not self.spec.adversarial:
            gan_only = {
                "diffaugment": bool(self.diffaugment),
                "ada.enabled": self.ada.enabled,
                "freeze_d": bool(self.freeze_d),
                "init_from": self.init_from is not None,
                "n_critic": self.n_critic != 1,
                "d_variant": self.d_variant != "plain",
                "r1.gamma": bool(self.r1_gamma),
                "path_length.weight": bool(self.path_length.weight),
            }
            if any(gan_only.values()):
                raise ValueError(
                    f"model {self.model!r} has no discriminator: unset {', '.join(k for k, v in gan_only.items() if v)}"
                )
        return self

    def _check_graphable(self) -> None:
        """`graph` replays the kernels of one captured step: whatever else a step draws or decides on the host (noise,
        mixing, augmentation, a penalty's interpolation, a lazy regulariser's schedule, the fp16 scaler's skips, DDP's
        exchanges) would replay as it was at capture. One error names everything in the way."""
        in_the_way = {
            f"model {self.model!r} (graph takes dcgan, acgan and wgan-gp)": (
                not self.spec.adversarial or self.spec.style
            ),
            f"loss {self.loss!r} (its penalty draws per step)": self.loss in GP_LOSSES,
            "r1.gamma": bool(self.r1_gamma),
            "path_length.weight": bool(self.path_length.weight),
            "diffaugment": bool(self.diffaugment),
            "ada.enabled": self.ada.enabled,
            "amp 'fp16' (use bf16)": self.amp == "fp16",
            f"compile {self.compile!r} (it replays graphs of its own; compile: default goes with graph)": (
                self.compile in ("reduce-overhead", "max-autotune")
            ),
            "nproc > 1": self.nproc > 1,
            "ema_rampup (its decay changes each step; null with ema)": self.ema > 0 and self.ema_rampup is not None,
        }
        if any(in_the_way.values()):
            raise ValueError(
                "graph: true captures a step that draws only its batches, latents and labels on the host; "
                f"in the way: {', '.join(k for k, v in in_the_way.items() if v)}"
            )


class ClassifierConfig(Section):
    epochs: int = Field(6, ge=1, le=1000)
    batch_size: int = Field(64, ge=2, le=4096)
    lr: float = Field(2e-3, gt=0, lt=1)
    val_fraction: float = Field(0.1, gt=0, lt=0.9, description="real images held out to measure its accuracy")


class EvaluateConfig(Section):
    extractors: list[Extractor] = Field(["inception", "dlib"], min_length=1)
    mode: Literal["legacy", "clean"] = Field(
        "legacy", description="legacy: pytorch-fid's bilinear resize; clean: PIL bicubic resize (clean-fid style)"
    )
    num_samples: int = Field(10_000, ge=2, description="generated images for the final Frechet distance / KID")
    max_real: int = Field(1000, ge=2, description="real images used for the reference statistics")
    batch_size: int = Field(50, ge=1, le=1024)
    workers: int = Field(2, ge=1, le=64, description="processes computing dlib embeddings (one core each)")
    inception_weights: UserPath | None = Field(None, description="explicit path to pt_inception-...pth")
    seed: int = Field(12345, ge=0)
    classifier: ClassifierConfig = ClassifierConfig()

    @field_validator("extractors")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("extractors are listed twice")
        return v


class TrackingConfig(Section):
    enabled: bool = Field(True, description="log every stage to MLflow")
    experiment: str = Field("facegan", min_length=1)
    tracking_uri: str = Field("sqlite:///mlflow.db", description="MLFLOW_TRACKING_URI overrides this")


TRANSFER_PRETRAIN = "pretrain"  # the source run of the transfer story (data/runs/<source>/pretrain)


class TransferConfig(Section):
    """The transfer study: pretrain on `source`, then fine-tune on (a subset of) the small `target` set once per
    row of `runs` and seed of `seeds`; a row with `pretrained: false` is the same training from random weights
    (the from-scratch control, same kimg budget). Rows are compared by the mean and spread of their Frechet
    distances (facegan.transfer)."""

    enabled: bool = True
    source: str = "cartoon"
    target: str = "sketch"
    pretrain: TrainConfig = TrainConfig(model="stylegan2")
    finetune: TrainConfig = TrainConfig(model="stylegan2")
    runs: dict[str, dict[str, Any]] = Field(
        {"baseline": {}},
        min_length=1,
        description="row name -> overrides of `finetune` (e.g. freeze_d, ada, diffaugment; pretrained: false)",
    )
    seeds: list[Annotated[int, Field(ge=0)]] = Field([0], min_length=1, description="train.seed of each run of a row")
    target_images: int | None = Field(
        None, ge=2, description="fine-tune on a seeded subset of this many target images (train.max_images); null = all"
    )
    num_samples: int | None = Field(
        None, ge=2, description="generated images of each run's final Frechet distance; null = evaluate.num_samples"
    )

    @model_validator(mode="after")
    def _runs_valid(self) -> TransferConfig:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"transfer.seeds repeats a seed: {self.seeds}")
        if TRANSFER_PRETRAIN in self.runs:
            raise ValueError(f"a row of transfer.runs is named {TRANSFER_PRETRAIN!r}, the source run's name: rename it")
        # each names its runs' folders, data/runs/<target>/<row>-s<seed>, and DVC stages
        if problem := folder_name_problem(list(self.runs), "transfer row", "their data/runs/ folders"):
            raise ValueError(problem)
        for name in self.runs:
            self.run_config(name, self.seeds[0], Path("pretrained.pt"))  # every run's config is checked up front
        return self

    def variant(self, row: str, seed: int) -> str:
        """Where one run of a row lives: data/runs/<target>/<row>-s<seed> (a chain.Layout variant)."""
        return f"{row}-s{seed}"

    def includes(self, dataset: str, variant: str | None) -> bool:
        """Whether a stage of `dataset` run as `variant` (chain.Layout) is one of this study's runs."""
        if not self.enabled or variant is None:
            return False
        if variant == TRANSFER_PRETRAIN:
            return dataset == self.source
        return dataset == self.target and variant in {self.variant(r, s) for r in self.runs for s in self.seeds}

    def pretrained(self, name: str) -> bool:
        """Whether row `name` starts from the pretrained model (else from random weights)."""
        return bool(self.runs[name].get("pretrained", True))

    def check(self, row: str | None = None, seed: int | None = None) -> None:
        """`row` is one of `runs` and `seed` one of `seeds` (None: not chosen), checked before any work."""
        if row == TRANSFER_PRETRAIN:
            raise ParamsError(f"{row!r} is the source run, not a row; rows: {', '.join(self.runs)}")
        if row is not None and row not in self.runs:
            raise ParamsError(f"unknown transfer row {row!r}; rows: {', '.join(self.runs)}")
        if seed is not None and seed not in self.seeds:
            raise ParamsError(f"seed {seed} is not in transfer.seeds {self.seeds}")

    def run_config(self, name: str, seed: int, init_from: Path) -> TrainConfig:
        """`finetune` + the row's overrides with `seed`, starting from the pretrained checkpoint (rows with
        `pretrained: false`: from random weights), on the `target_images` subset. ParamsError: an unknown row, or
        a config that does not validate (`problems`: one line each, keys under transfer.runs.<row>)."""
        self.check(name)
        overrides = {k: v for k, v in self.runs[name].items() if k != "pretrained"}
        raw = _merge(self.finetune.model_dump(mode="json"), overrides)
        raw |= {"seed": seed, "max_images": self.target_images}
        raw["init_from"] = str(init_from) if self.pretrained(name) else None
        freeze = raw.get("freeze_d")
        if type(freeze) is int and freeze > 0 and raw["init_from"] is None:  # TrainConfig's advice (init_from) is not
            where = "the row" if "freeze_d" in overrides else "transfer.finetune"  # one a row can follow
            said = (
                f"transfer.runs.{name}: freeze_d {freeze} (from {where}) freezes pretrained D blocks, and this row "
                "trains from random weights (pretrained: false): set freeze_d: 0 in the row"
            )
            raise ParamsError(said, [said])
        try:
            return TrainConfig.model_validate(raw)
        except ValidationError as e:
            problems = [line for err in e.errors() for line in _describe(err, TrainConfig, ("transfer", "runs", name))]
            raise ParamsError("; ".join(problems), problems) from None  # _describe lists each under the row's key


class CycleGANConfig(RunSettings):
    """Unpaired translation between two packed datasets `a` and `b` (facegan.cyclegan)."""

    enabled: bool = False
    a: str = "cartoon"
    b: str = "sketch"
    g_channels: int = Field(64, ge=4, le=512, description="width of the ResNet generators' first conv (ngf)")
    res_blocks: int = Field(6, ge=1, le=32, description="residual blocks in each generator (9 for 256 px in the paper)")
    d_channels: int = Field(64, ge=4, le=512, description="width of the PatchGAN discriminators' first conv (ndf)")
    d_layers: int = Field(3, ge=1, le=6, description="PatchGAN strided layers (3 = the 70x70 PatchGAN)")
    spectral_norm: bool = Field(False, description="spectral norm on every discriminator conv")
    loss: Literal["lsgan", "nonsaturating", "hinge"] = "lsgan"
    cycle_weight: float = Field(10.0, ge=0, description="lambda of the L1 cycle-consistency loss")
    identity_weight: float = Field(0.5, ge=0, description="identity loss, as a fraction of cycle_weight")
    ssim_weight: float = Field(0.0, ge=0, description="weight of the SSIM loss on the cycle reconstructions")
    pool_size: int = Field(50, ge=0, le=10_000, description="history of generated images shown to D (0 = off)")
    diffaugment: DiffAugmentPolicies = Field(
        [], description="DiffAugment policies applied to every image the discriminators see"
    )
    steps: int = Field(1000, ge=1)
    decay_start: int = Field(500, ge=0, description="the learning rate decays linearly to 0 from this step")
    batch_size: int = Field(1, ge=1, le=1024)
    lr: float = Field(2e-4, gt=0, lt=1)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    mirror: bool = True
    num_samples: int = Field(500, ge=2, description="images translated per direction for its Frechet distance")

    # the scoring after training does not change the model (steps does: the learning rate decays to the last)
    RESUME_NEUTRAL: ClassVar[frozenset[str]] = RunSettings.RESUME_NEUTRAL | {"num_samples", "enabled"}

    @model_validator(mode="after")
    def _consistent(self) -> CycleGANConfig:
        if self.decay_start > self.steps:
            raise ValueError(f"decay_start {self.decay_start} is after the last step ({self.steps})")
        return self


class DaskConfig(Section):
    """Where `orchestration.runner: dask` runs: an existing scheduler, or a LocalCluster started for each stage."""

    address: str | None = Field(
        None,
        description="scheduler of an existing cluster, e.g. tcp://10.0.0.5:8786; its "
        "workers must import facegan and see the data folder at the same absolute path",
    )
    local_workers: int = Field(2, ge=1, le=256, description="without address: worker processes of a LocalCluster")
    threads_per_worker: int = Field(
        1,
        ge=1,
        le=64,
        description="LocalCluster threads per worker (dlib and OpenCV hold the GIL in places: processes scale better)",
    )
    workers_timeout_s: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="how long a stage waits for its cluster to have a running worker: at the start (dask.address), "
        "and after it has lost them all (workers killed, left, or paused for memory); then it fails",
    )


class OrchestrationConfig(Section):
    """How per-image stages (generate, detect, verify, align, matte, upscale, quality) spread their images."""

    runner: Literal["local", "dask"] = Field(
        "local",
        description="local: `workers` processes on this machine; "
        "dask: chunked Prefect tasks on a Dask cluster (prefect-dask)",
    )
    chunk_size: int = Field(
        0,
        ge=0,
        le=100_000,
        description="images per task; 0 = about 8 tasks per worker, at most "
        "32 images each (see docs/scaling.md for when the per-task overhead dominates)",
    )
    dask: DaskConfig = DaskConfig()


def folder_name_problem(
    names: list[str], what: str, folders: str, reserved: dict[str, str] | None = None
) -> str | None:
    """Why `names` (of `what`: "dataset", "transfer row") cannot all name folders (`folders`, e.g. "their data/
    folders"): ASCII letters, digits, '-' and '_', from a letter; none in `reserved` (casefolded name -> why); no
    two that differ only in case, one folder on macOS's and Windows's file systems. None when they can."""
    folded: dict[str, str] = {}
    for name in names:
        if not (name.isascii() and name.replace("_", "").replace("-", "").isalnum() and name[0].isalpha()):
            return f"{what} name {name!r}: use ASCII letters, digits, '-' and '_', starting with a letter"
        if why := (reserved or {}).get(name.casefold()):
            return f"{what} name {name!r}: reserved ({why}); rename it"
        if (other := folded.setdefault(name.casefold(), name)) != name:
            return (
                f"{what} names {other!r} and {name!r} differ only in case: {folders} would be one folder on a "
                "case-insensitive file system (macOS, Windows); rename one"
            )
    return None


def dataset_name_problem(names: list[str]) -> str | None:
    """Why these dataset names cannot all be folder names under data/ (None when they can)."""
    # data/checkpoints/cyclegan/ is the CycleGAN stage's work folder
    reserved = {"cyclegan": "data/checkpoints/cyclegan/ is the CycleGAN stage's"}
    return folder_name_problem(names, "dataset", "their data/ folders", reserved)


class Params(Section):
    workers: int = Field(2, ge=1, le=256, description="processes for per-image stages")
    orchestration: OrchestrationConfig = OrchestrationConfig()
    datasets: dict[str, DatasetConfig] = Field(min_length=1)
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()
    transfer: TransferConfig = TransferConfig(enabled=False)
    cyclegan: CycleGANConfig = CycleGANConfig()

    @field_validator("datasets")
    @classmethod
    def _names(cls, v: dict[str, DatasetConfig]) -> dict[str, DatasetConfig]:
        problem = dataset_name_problem(list(v))
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _fid_during_training(self) -> Params:
        if self.train.fid_every and self.train.fid_extractor not in self.evaluate.extractors:
            raise ValueError(
                f"train.fid_extractor {self.train.fid_extractor!r} must be one of evaluate.extractors "
                f"({', '.join(self.evaluate.extractors)}): its reference statistics come from refstats"
            )
        return self

    def _check_pair(self, section: str, roles: dict[str, str]) -> None:
        """Two datasets used together (transfer, cyclegan): both defined, different, packed at one resolution."""
        for role, name in roles.items():
            if name not in self.datasets:
                raise ValueError(
                    f"{section}.{role} {name!r} is not a dataset; the params file defines: {', '.join(self.datasets)}"
                )
        first, second = roles.values()
        if first == second:
            raise ValueError(f"{section}: {' and '.join(roles)} must be two different datasets")
        if self.datasets[first].pack.resolution != self.datasets[second].pack.resolution:
            raise ValueError(f"{section}: {' and '.join(roles)} datasets must be packed at the same resolution")

    @model_validator(mode="after")
    def _pairs(self) -> Params:
        if self.transfer.enabled:
            self._check_pair("transfer", {"source": self.transfer.source, "target": self.transfer.target})
        if self.cyclegan.enabled:
            self._check_pair("cyclegan", {"a": self.cyclegan.a, "b": self.cyclegan.b})
            layers, side = self.cyclegan.d_layers, self.datasets[self.cyclegan.a].pack.resolution
            if side < 3 * 2**layers:  # its last conv and InstanceNorm need a map of at least 2x2
                most = max((n for n in range(1, layers) if side >= 3 * 2**n), default=None)
                raise ValueError(
                    f"cyclegan.d_layers {layers}: the PatchGAN halves the images {layers} times and needs "
                    f"{2 ** (layers + 2)} px; its datasets are packed at {side} px"
                    + (f": use d_layers {most}" + (" or less" if most > 1 else "") if most else "")
                )
        return self

    def transfer_evaluate(self) -> EvaluateConfig:
        """`evaluate` as the transfer study scores: with its own sample count (transfer.num_samples) when set. The
        same for the params a study's runs get (their `evaluate` is this already) as for the study's."""
        n = self.transfer.num_samples
        return self.evaluate if n is None else self.evaluate.model_copy(update={"num_samples": n})

    def dataset(self, name: str) -> DatasetConfig:
        """The config of one dataset; unknown names list the known ones."""
        try:
            return self.datasets[name]
        except KeyError:
            defined = ", ".join(self.datasets)
            raise ParamsError(f"unknown dataset {name!r}; the params file defines: {defined}") from None


# ---- loading and error messages -------------------------------------------------------------


S = TypeVar("S", bound=BaseModel)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a key given twice in one mapping (safe_load keeps the last one silently:
    a setting pasted twice, or a dataset block's lines run into the one before it, would change a run unseen)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: merged by the parent class, not a key
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):  # the parent class says what is wrong with it
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {key!r} a second time (first on line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(e: yaml.YAMLError, text: str) -> str:
    """Where and what, on one line (PyYAML's own text spans lines: the string it read, a caret under the column)."""
    if isinstance(e, yaml.reader.ReaderError):  # a control character (or U+FFFE): PyYAML gives an offset in the text
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        code = e.character if isinstance(e.character, int) else ord(e.character)
        return f" at line {line}, column {column}: the character U+{code:04X} is not allowed in YAML"
    if not isinstance(e, yaml.MarkedYAMLError) or e.problem is None:
        return f": {flat(e)}"
    mark, began = e.problem_mark, e.context_mark

    def at(m: yaml.Mark) -> str:
        return f"line {m.line + 1}, column {m.column + 1}"

    where = f" at {at(mark)}" if mark else ""
    context = e.context or ""
    if context and not context.startswith("while"):  # what the problem is the second half of: "duplicate anchor"
        return f"{where}: {context}{f' ({at(began)})' if began else ''}; {e.problem}"
    opened = ""  # where an unclosed bracket or quote began, when elsewhere ("while parsing a flow sequence")
    if context.startswith(("while parsing", "while scanning")) and began and mark and began.line != mark.line:
        opened = f" ({context} that began at {at(began)})"
    return f"{where}: {e.problem}{opened}"


def read_yaml(path: Path) -> Any:
    """A params file or overlay (or the project's dvc.yaml / dvc.lock), parsed; ParamsError when it is missing or
    not YAML, in one line."""
    if not path.is_file():
        raise ParamsError(f"params file not found: {path.resolve()}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ParamsError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML{_yaml_problem(e, text)}") from None
    except (ValueError, TypeError, AttributeError, KeyError) as e:  # PyYAML's constructors fail: 2026-02-30, !!int x
        why = f" ({flat(e)})" if isinstance(e, ValueError) else ""
        raise ParamsError(f"{path}: not valid YAML: a date or a tagged (!!) value it cannot build{why}") from None


def dvc_stages(path: Path) -> dict[str, dict[str, Any]]:
    """The stages of a dvc.yaml or dvc.lock, by name; a stage of another shape is left out (`dvc repro` names
    it). ParamsError when the file does not parse."""
    raw = read_yaml(path)
    stages = raw.get("stages") if isinstance(raw, dict) else None
    return {k: v for k, v in stages.items() if isinstance(v, dict)} if isinstance(stages, dict) else {}


def load_params(
    path: Path | str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    source: str | None = None,
    root: Path | str | None = None,
) -> Params:
    """Read and validate params.yaml (with dotted `overrides`, see `apply_overrides`); raise ParamsError
    with one readable message on any problem, naming `source` (default: the file, `+ overrides` with them).
    Given the project `root` (a command's --root, a flow's root), a relative MLflow store is that root's
    (`anchored`): where `dvc repro` writes it, not the current folder."""
    path = Path(path)
    raw = read_yaml(path)
    if not overrides:
        p = parse_params(raw, source=source or str(path))
    elif not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    else:
        p = parse_params(apply_overrides(raw, overrides), source=source or f"{path} + overrides")
    return p if root is None else p.model_copy(update={"tracking": anchored(p.tracking, Path(root))})


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of the params mapping `raw` with dotted keys set: {"train.steps": 800, "datasets.cartoon.pack":
    {...}}. Missing sections are created (validation then names unknown keys); a key under a plain value is
    an error naming it."""
    import copy

    out = copy.deepcopy(raw)
    for key, value in overrides.items():
        *path, last = key.split(".")
        if not last or not all(path):
            raise ParamsError(f"override {key!r}: empty key part; use dotted names like 'train.steps'")
        node = out
        for i, k in enumerate(path):
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ParamsError(f"override {key!r}: {'.'.join(path[: i + 1])} is a value ({node!r}), not a section")
        node[last] = value
    return out


def find_params(root: Path | str | None = None) -> Path | None:
    """The params file of a command given no -p: the project root's params.yaml (its --root), else the current
    folder's; None when neither is there."""
    places = [Path(root) / "params.yaml"] if root is not None else []
    return next((f for f in [*places, Path("params.yaml")] if f.is_file()), None)


def params_of(path: Path | str | None, root: Path | str | None = None) -> Path:
    """`path` when given, else `find_params(root)`; ParamsError naming where it looked when there is none."""
    if path is not None:
        return Path(path)
    if (found := find_params(root)) is not None:
        return found
    places = dict.fromkeys(str(f.resolve()) for f in (Path(root or ".") / "params.yaml", Path("params.yaml")))
    raise ParamsError(f"params file not found: {' nor '.join(places)}; give one with -p")


def load_tracking(path: Path | str | None = None, root: Path | None = None) -> TrackingConfig:
    """The `tracking` section of a params file, for commands that only talk to MLflow (sample --model-uri,
    track sync, reproduce, timings): `path`, else `find_params(root)`, else the defaults. Only that section is
    read and validated; a relative store is the project root's where `root` is given (`anchored`).
    MLFLOW_TRACKING_URI still overrides its tracking_uri (see facegan.track)."""
    if path is None:
        path = find_params(root)
        if path is None:
            return TrackingConfig() if root is None else anchored(TrackingConfig(), root)
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):  # a list or an empty file: its store is not the default's
        raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    section = raw.get("tracking")
    try:
        tracking = TrackingConfig.model_validate(section or {})
    except ValidationError as e:
        problems = [x for err in e.errors() for x in _describe(err, TrackingConfig, ("tracking",))]
        raise _invalid(str(path), problems) from None
    return tracking if root is None else anchored(tracking, root)


def anchored(tracking: TrackingConfig, root: Path) -> TrackingConfig:
    """`tracking` with a relative local store (`sqlite:///mlflow.db`, a folder) read in the project root `root`
    (a command's --root), where `dvc repro` runs the stages and so writes it, not in the current folder. From the
    root itself the value is left as written (the stages' records name the store as written)."""
    with contextlib.suppress(OSError):  # a root that is not there: the command says so on its own
        if os.path.samefile(root, os.curdir):
            return tracking
    uri = local_store(tracking.tracking_uri, root)
    return tracking if uri == tracking.tracking_uri else tracking.model_copy(update={"tracking_uri": uri})


def sqlite_file(uri: str) -> tuple[str, str] | None:
    """(path, query) of an SQLite store's database file (`sqlite:///mlflow.db?timeout=30` -> ("mlflow.db",
    "?timeout=30")); None for any other store and for an in-memory database."""
    if not uri.startswith("sqlite:///"):
        return None
    path, mark, query = uri.removeprefix("sqlite:///").partition("?")
    return None if path == ":memory:" else (path, mark + query)


def local_store(uri: str, base: Path | str, resolve: bool = False) -> str:
    """`uri` with the path of a local store (`sqlite:///mlflow.db`, a folder of MLflow's file store) read in
    `base`: absolute; with `resolve`, links resolved too and an SQLite query left out (one store, one spelling:
    what two records of a store compare). A server's address, an absolute path and an in-memory database are left
    as they are."""
    absolute = os.path.realpath if resolve else os.path.abspath  # a root reached through a link stays that path
    if (db := sqlite_file(uri)) is not None:
        path, query = db
        if os.path.isabs(path) and not resolve:
            return uri
        return f"sqlite:///{absolute(os.path.join(base, path))}{'' if resolve else query}"
    if ":" not in uri and not uri.startswith("databricks"):  # a folder of MLflow's file store
        path = os.path.expanduser(uri)
        return uri if os.path.isabs(path) and not resolve else absolute(os.path.join(base, path))
    return uri


def parse_params(raw: Any, source: str = "params") -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    return parse_section(Params, raw, source)


def parse_section(section: type[S], raw: dict[str, Any], source: str, saved: bool = False) -> S:
    """One section (e.g. command-line options given to a config type) validated with ParamsError's messages;
    `saved`: a checkpoint's config, whose rules of D's training are not checked again (TrainConfig._compatible)."""
    try:
        return section.model_validate(raw, context={"saved": True} if saved else None)
    except ValidationError as e:
        raise _invalid(source, [x for err in e.errors() for x in _describe(err, section)]) from None


def _invalid(source: str, problems: list[str]) -> ParamsError:
    """The ParamsError of a validation that found `problems` in `source`: one indented line each."""
    return ParamsError(
        f"{source}: {len(problems)} invalid value(s):\n" + "\n".join(f"  - {p}" for p in problems), problems
    )


def _describe(err: ErrorDetails, root: type[BaseModel] | None = None, prefix: tuple[str, ...] = ()) -> list[str]:
    """The problems of one validation error of `root` (default: Params), a line each; keys shown under `prefix`
    (where `root` sits in params.yaml). A check that found several (a transfer row's config) gives each one."""
    carried = (err.get("ctx") or {}).get("error")
    if isinstance(carried, ParamsError) and carried.problems:
        return carried.problems
    loc = list(err["loc"])
    shown = [str(p) for i, p in enumerate(loc) if not (i and loc[i - 1] == "source" and p in _SOURCE_TAGS)]
    key = ".".join([*prefix, *shown]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")  # pydantic's name for a check's own message
    if err["type"] == "extra_forbidden":
        return [f"{key}: unknown key; allowed keys here: {', '.join(_allowed_keys(loc[:-1], root))}"]
    if err["type"] == "missing":
        return [f"{key}: required key is missing"]
    if err["type"] == "value_error" and isinstance(err.get("input"), dict):  # a section's own check: names its keys
        return [f"{key}: {msg}"]
    return [f"{key}: got {err.get('input')!r}; {msg}"]


_SOURCE_TAGS: dict[str, type[BaseModel]] = {"cartoon": CartoonSource, "folder": FolderSource}


def _allowed_keys(loc: list[Any], root: type[BaseModel] | None = None) -> list[str]:
    """Field names of the model found at `loc` inside `root` (default: Params; dataset names and list indices
    skipped)."""
    model: type[BaseModel] = root or Params
    for part in loc:
        if model is DatasetConfig and part == "source":
            model = CartoonSource  # refined by the tag that follows
            continue
        if part in _SOURCE_TAGS and model in _SOURCE_TAGS.values():
            model = _SOURCE_TAGS[part]
            continue
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            continue
        ann = field.annotation
        nested = [c for c in (ann, *getattr(ann, "__args__", ())) if isinstance(c, type) and issubclass(c, BaseModel)]
        if nested:
            model = nested[0]
    return sorted(model.model_fields)


def flatten(params: Params | BaseModel | dict, prefix: str = "", empty: bool = False) -> dict[str, Any]:
    """`{"train.lr_g": 0.0002, ...}`: every leaf value under dotted keys (for MLflow params); `empty`: an empty
    mapping is a leaf too (an overlay's transfer row `mine: {}`), where it is left out."""
    data = params.model_dump(mode="json") if isinstance(params, BaseModel) else params
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and (v or not empty):
            out.update(flatten(v, key + ".", empty))
        else:
            out[key] = v
    return out
