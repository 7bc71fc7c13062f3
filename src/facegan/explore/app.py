"""The explorer's page: a thin gradio view over facegan.latent, where every computation happens.

Tabs follow the model kind: Sample (every generator: seed, random, psi where there is truncation, attribute
dropdowns for acgan, latent directions and style mixing for StyleGAN2, grid, interpolation), Encode (vae),
Translate (cyclegan) and Compare (two models at the same seeds, with their FID rows from the tracking store).
A handler that fails shows one line in the status bar (and the log) and leaves the images as they were.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

from facegan.errors import FaceganError
from facegan.latent import (
    RANDOM,
    DirectionNames,
    ExploreError,
    Model,
    Models,
    Sampler,
    Source,
    StyleSampler,
    Translator,
    VAESampler,
)
from facegan.runs_table import COLUMNS
from facegan.track import NAME_LENGTH, folded

log = logging.getLogger("facegan.explore")

CSS = """.pixelated img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
#status { min-height: 1.5em; }"""
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"],  # local fonts: no font downloads
    font_mono=["ui-monospace", "monospace"],
)
# every rendered image and upload is a file in gradio's cache: every hour those older than a day go (an upload
# still on the page then has to be given again)
DELETE_CACHE = (3600, 86400)
METHODS = {"SeFa (closed-form factorization)": "sefa", "GANSpace (PCA of w)": "ganspace"}
IMAGE: dict[str, Any] = dict(
    type="numpy", format="png", interactive=False, buttons=["download", "fullscreen"], elem_classes=["pixelated"]
)


def _error(msg: str) -> str:
    return f"**error:** {msg}"


def guarded(n_outputs: int) -> Callable:
    """A handler returning (outputs..., status): on failure the outputs stay, the status shows the message and
    the log gets it; the app keeps serving whatever went wrong."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args):
            t0 = time.perf_counter()
            try:
                out, note = fn(*args)
            except FaceganError as e:  # a model, value or upload the user can change: shown, logged, no traceback
                log.warning("explore: %s", e)
                return *[gr.skip()] * n_outputs, _error(str(e))
            except Exception as e:
                log.exception("explore: %s failed", fn.__name__)
                return *[gr.skip()] * n_outputs, _error(
                    f"unexpected {type(e).__name__}: {e} (details in the server log)"
                )
            out = out if isinstance(out, tuple) else (out,)
            return *out, f"{note} ({(time.perf_counter() - t0) * 1000:.0f} ms)"

        return run

    return wrap


PAGE_SEEDS = 2**53  # the page's numbers are the browser's doubles, whole only below 2^53 (`facegan sample` seeds)


def _seed(value, box: str = "seed") -> int:
    if value is None or str(value).strip() == "":
        raise ExploreError(f"the {box} box is empty: type a whole number")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not (math.isfinite(number) and number.is_integer() and 0 <= number < PAGE_SEEDS):
        raise ExploreError(f"{box} {value} must be a whole number between 0 and {PAGE_SEEDS - 1}")
    return int(number)


def _mix(seed, groups) -> tuple[int, list[str]] | None:
    """Style mixing's (seed, layer groups); none while no group is ticked, whatever the style seed box holds."""
    return (_seed(seed, "style seed"), list(groups)) if groups else None


def _direction_choices(names: dict[int, str], k: int) -> list[tuple[str, int]]:
    return [(f"{i}: {names[i]}" if i in names else str(i), i) for i in range(k)]


M = TypeVar("M")


class Page:
    """Builds the Blocks for one model; `models` resolves and caches the compare tab's models."""

    def __init__(self, model: Model, source: Source, models: Models):
        self.model, self.source, self.models = model, source, models
        self.names: DirectionNames | None = models.names(source) if model.styles else None

    def _as(self, kind: type[M]) -> M:
        """The model as the kind a tab is built for (build() only adds the tabs the model has)."""
        assert isinstance(self.model, kind), f"{type(self.model).__name__} is not a {kind.__name__}"
        return self.model

    def build(self) -> gr.Blocks:
        m = self.model
        with gr.Blocks(
            title=f"facegan explore: {self.source.label}", analytics_enabled=False, delete_cache=DELETE_CACHE
        ) as demo:
            gr.Markdown(f"### facegan explore: {self.source.label}\n{m.describe()}")
            self.status = gr.Markdown(elem_id="status")
            with gr.Tabs():
                if m.kind != "cyclegan":
                    with gr.Tab("Sample", id="sample"):
                        self._sample_tab(demo)
                if m.encodes:
                    with gr.Tab("Encode", id="encode"):
                        self._encode_tab()
                if m.kind == "cyclegan":
                    with gr.Tab("Translate", id="translate"):
                        self._translate_tab()
                else:
                    with gr.Tab("Compare", id="compare"):
                        self._compare_tab()
        return demo

    # -- Sample ------------------------------------------------------------------------------------------------
    def _sample_tab(self, demo: gr.Blocks) -> None:
        m = self._as(Sampler)
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Row():
                    seed = gr.Number(0, precision=0, label="seed", elem_id="seed", minimum=0)
                    rand = gr.Button("random seed", elem_id="random-seed")
                psi = gr.Slider(
                    0.0,
                    1.2,
                    1.0,
                    step=0.05,
                    label="truncation ψ (1 = none, 0 = the average face)",
                    visible=m.truncation,
                    elem_id="psi",
                )
                attrs = [
                    gr.Dropdown([RANDOM, *m.label_values[n]], value=RANDOM, label=n, elem_id=f"attr-{n}")
                    for n in m.label_names
                ]
                steer = self._style_controls() if m.styles else []
            with gr.Column(scale=3):
                main = gr.Image(label="sample", elem_id="main-image", height=320, **IMAGE)
        with gr.Accordion("Grid of samples (seeds seed .. seed + N - 1)", open=False):
            with gr.Row():
                n = gr.Slider(1, 64, 16, step=1, label="N", elem_id="grid-n")
                grid_btn = gr.Button("render grid", elem_id="grid-button")
            grid_out = gr.Image(label="grid", elem_id="grid-image", height=480, **IMAGE)
        with gr.Accordion("Interpolation between two seeds", open=False):
            with gr.Row():
                seed_b = gr.Number(1, precision=0, label="to seed", elem_id="seed-b", minimum=0)
                steps = gr.Slider(2, 16, 8, step=1, label="steps")
                mode = gr.Radio(["slerp", "linear"], value="slerp", label="path")
                interp_btn = gr.Button("interpolate", elem_id="interp-button")
            interp_out = gr.Image(label="interpolation", elem_id="interp-image", height=160, **IMAGE)

        controls = [seed, psi, *attrs, *steer]

        def chosen(rest: tuple) -> tuple[dict[str, str], dict[str, Any]]:
            """The attribute values and, for StyleGAN2, the steering (direction, style mixing) of the controls
            after seed and psi: the main image, the grid and the interpolation show the same steering."""
            labels = dict(zip(m.label_names, rest[: len(attrs)], strict=True))
            if not m.styles:
                return labels, {}
            method, index, amount, mix_seed, groups = rest[len(attrs) :]
            return labels, {
                "direction": (METHODS.get(method, method), int(index or 0), float(amount)),
                "mix": _mix(mix_seed, groups),
            }

        @guarded(1)
        def render(seed_v, psi_v, *rest):
            labels, steer_v = chosen(rest)
            s = _seed(seed_v)
            return m.image(s, float(psi_v), labels, **steer_v), f"seed {s}"

        @guarded(1)
        def render_grid(n_v, seed_v, psi_v, *rest):
            labels, steer_v = chosen(rest)
            s = _seed(seed_v)
            return m.grid(s, int(n_v), float(psi_v), labels, **steer_v), f"grid of seeds {s}..{s + int(n_v) - 1}"

        @guarded(1)
        def render_interp(seed_b_v, steps_v, mode_v, seed_v, psi_v, *rest):
            labels, steer_v = chosen(rest)
            a, b = _seed(seed_v), _seed(seed_b_v, "to seed")
            strip = m.interpolation(a, b, int(steps_v), mode_v, float(psi_v), labels, **steer_v)
            return strip, f"{mode_v} path from seed {a} to seed {b}"

        live = dict(
            fn=render,
            inputs=controls,
            outputs=[main, self.status],
            show_progress="hidden",
            trigger_mode="always_last",
            queue=False,
        )
        for c in controls:
            c.change(**live)
        demo.load(**live)
        rand.click(lambda: random.randrange(2**31), outputs=seed)  # seed.change renders
        grid_btn.click(render_grid, [n, *controls], [grid_out, self.status])
        interp_btn.click(render_interp, [seed_b, steps, mode, *controls], [interp_out, self.status])

    def _style_controls(self) -> list:
        m = self._as(StyleSampler)
        k = m.n_directions
        with gr.Accordion("Latent directions", open=True):
            method = gr.Radio(list(METHODS), value=next(iter(METHODS)), label="method", elem_id="method")
            index = gr.Dropdown(
                _direction_choices(self._names("sefa"), k), value=0, label="direction", elem_id="direction"
            )
            amount = gr.Slider(-5, 5, 0, step=0.1, label="amount (standard deviations of w along it)", elem_id="amount")
            with gr.Row():
                name = gr.Textbox(label="name this direction", placeholder="e.g. hair, smile, tilt", elem_id="name")
                save = gr.Button("save name", elem_id="save-name")
        with gr.Accordion("Style mixing", open=True), gr.Row():
            mix_seed = gr.Number(1, precision=0, label="style seed", elem_id="mix-seed", minimum=0)
            groups = gr.CheckboxGroup(
                list(m.groups),
                value=[],
                label="take these layers from the style seed",
                elem_id="mix-groups",
                info=", ".join(f"{g}: styles {v[0]}-{v[-1]}" if v else f"{g}: none" for g, v in m.groups.items()),
            )

        def refresh(method_v, index_v):
            names = self._names(METHODS[method_v])
            return gr.update(choices=_direction_choices(names, k), value=index_v), names.get(int(index_v or 0), "")

        @guarded(2)
        def save_name(method_v, index_v, text):
            i = int(index_v or 0)
            assert self.names is not None  # style models have direction names
            names = self.names.save(METHODS[method_v], i, text or "")
            stored = names.get(METHODS[method_v], {}).get(i, "")  # track.direction_name(text)
            log.info("direction %s %d named %r (%s)", METHODS[method_v], i, stored, self.source.label)
            cut = f" (cut to {NAME_LENGTH} characters)" if len(folded(text or "")) > NAME_LENGTH else ""
            said = f"direction {i} of {method_v.split()[0]} named {stored!r}{cut}"
            return (
                gr.update(choices=_direction_choices(names.get(METHODS[method_v], {}), k), value=i),
                stored,
            ), said if stored else f"name of direction {i} cleared"

        method.change(refresh, [method, index], [index, name])
        index.input(lambda mv, iv: self._names(METHODS[mv]).get(int(iv or 0), ""), [method, index], name)
        save.click(save_name, [method, index, name], [index, name, self.status])
        return [method, index, amount, mix_seed, groups]

    def _names(self, method: str) -> dict[int, str]:
        try:
            return self.names.load().get(method, {}) if self.names else {}
        except Exception as e:  # noqa: BLE001 - names are a convenience: never stop the page for them
            log.warning("explore: direction names unavailable: %s", e)
            return {}

    # -- Encode (VAE) --------------------------------------------------------------------------------------------
    def _encode_tab(self) -> None:
        m = self._as(VAESampler)
        gr.Markdown(
            "Upload a face: its reconstruction (decoder of the mean code) and decoded neighbours of its code "
            "(mean + radius × posterior σ × noise)."
        )
        with gr.Row():
            upload = gr.File(label="face image", type="filepath", elem_id="vae-upload", height=160)
            with gr.Column():
                radius = gr.Slider(0, 5, 1, step=0.1, label="neighbour radius (posterior σ)")
                n = gr.Slider(1, 16, 8, step=1, label="neighbours")
                nseed = gr.Number(0, precision=0, label="neighbour seed", minimum=0)
        with gr.Row():
            face = gr.Image(label="input (as the model sees it)", elem_id="vae-input", height=256, **IMAGE)
            recon = gr.Image(label="reconstruction", elem_id="vae-recon", height=256, **IMAGE)
        neigh = gr.Image(label="latent neighbours", elem_id="vae-neighbours", height=160, **IMAGE)

        @guarded(3)
        def encode(path, r, k, s):
            from facegan.latent import read_upload

            out = m.reconstruct(read_upload(path), int(k), float(r), _seed(s, "neighbour seed"))
            return (out["input"], out["reconstruction"], out["neighbours"]), "encoded the upload"

        for c in (upload, radius, n, nseed):
            c.change(encode, [upload, radius, n, nseed], [face, recon, neigh, self.status], trigger_mode="always_last")

    # -- Translate (CycleGAN) -------------------------------------------------------------------------------------
    def _translate_tab(self) -> None:
        m = self._as(Translator)
        gr.Markdown(
            f"Upload a face: read as **{m.a}** it is translated to **{m.b}** (and back), read as **{m.b}** to "
            f"**{m.a}** (and back)."
        )
        with gr.Row():
            upload = gr.File(label="face image", type="filepath", elem_id="cycle-upload", height=160)
            face = gr.Image(label="input (as the model sees it)", elem_id="cycle-input", height=200, **IMAGE)
        with gr.Row():
            ab = gr.Image(label=f"{m.a} → {m.b}", elem_id="cycle-ab", height=200, **IMAGE)
            aba = gr.Image(label=f"{m.a} → {m.b} → {m.a}", height=200, **IMAGE)
            ba = gr.Image(label=f"{m.b} → {m.a}", elem_id="cycle-ba", height=200, **IMAGE)
            bab = gr.Image(label=f"{m.b} → {m.a} → {m.b}", height=200, **IMAGE)

        @guarded(5)
        def translate(path):
            from facegan.latent import read_upload

            out = m.translate(read_upload(path))
            return (out["input"], out["a_to_b"], out["a_to_b_to_a"], out["b_to_a"], out["b_to_a_to_b"]), "translated"

        upload.change(translate, upload, [face, ab, aba, ba, bab, self.status])

    # -- Compare --------------------------------------------------------------------------------------------------
    def _compare_tab(self) -> None:
        gr.Markdown(
            "Two models at the same seeds (ψ applies to models with truncation). A model is "
            "`models:/NAME@ALIAS`, an MLflow run id or a checkpoint path."
        )
        with gr.Row():
            ref_a = gr.Textbox(self.source.ref, label="model A", elem_id="model-a")
            ref_b = gr.Textbox("", label="model B", elem_id="model-b")
        with gr.Row():
            seed = gr.Number(0, precision=0, label="seed", minimum=0)
            n = gr.Slider(1, 64, 16, step=1, label="N")
            psi = gr.Slider(0.0, 1.2, 1.0, step=0.05, label="truncation ψ")
            go = gr.Button("compare", elem_id="compare-button")
        with gr.Row():
            grid_a = gr.Image(label="A", elem_id="compare-a", height=400, **IMAGE)
            grid_b = gr.Image(label="B", elem_id="compare-b", height=400, **IMAGE)
        table = gr.Dataframe(headers=["source", *COLUMNS], label="FID rows from the tracking store", elem_id="fid-rows")

        @guarded(3)
        def compare(a_ref, b_ref, seed_v, n_v, psi_v):
            s, k = _seed(seed_v), int(n_v)
            sides = [self.models.from_page(r, self.source, f"model {x}") for r, x in ((a_ref, "A"), (b_ref, "B"))]
            samplers = []
            for (mdl, src), label in zip(sides, "AB", strict=True):
                if not isinstance(mdl, Sampler):
                    raise ExploreError(
                        f"model {label} ({src.label}) is a cyclegan translator: compare takes generators"
                    )
                samplers.append(mdl)
            grids = [mdl.grid(s, k, float(psi_v) if mdl.truncation else 1.0) for mdl in samplers]
            rows = self.models.rows([src for _, src in sides])
            data = [
                [
                    src.label,
                    *(
                        [row.get(c) if row.get(c) is not None else "" for c in COLUMNS]
                        if row
                        else ["not tracked", *[""] * (len(COLUMNS) - 1)]
                    ),
                ]
                for (_, src), row in zip(sides, rows, strict=True)
            ]
            return (*grids, data), f"{sides[0][1].label} vs {sides[1][1].label}, seeds {s}..{s + k - 1}"

        go.click(compare, [ref_a, ref_b, seed, n, psi], [grid_a, grid_b, table, self.status])


def build(model: Model, source: Source, models: Models) -> gr.Blocks:
    return Page(model, source, models).build()
