"""Slider-move latency of `facegan explore` on 64x64 models (goal: < 200 ms on 2 CPU threads).

    python bench/explore_latency.py [--threads 2] [--rounds 15] [--no-browser]

Models: the DCGAN of params.yaml `train` and the StyleGAN2 of `transfer.pretrain` (cpu preset), both at 64 px,
written as facegan checkpoints (untrained weights: the time does not depend on their values) and opened through
`facegan.latent.load_model`, as `facegan explore` does. Per slider move it times
- render: the library call the page makes (StyleGAN2: SeFa amount slider, psi slider; DCGAN: a new seed);
- browser: the whole round trip in headless Chromium (Debian's /usr/bin/chromium, Playwright) from setting the
  control to the new image loaded in the page: gradio queue, PNG encoding, the fetch and decode.
Prints the median of interleaved rounds per case (after 2 warm-up moves) and its ratio to the 200 ms goal.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GOAL_MS = 200.0
CHROMIUM = Path("/usr/bin/chromium")

# sets a control of the page like a person would (its input event), then waits for the new image to be shown
MOVE_JS = """async ([selector, value]) => {
  const img = () => document.querySelector('#main-image img');
  const old = img() ? img().src : '';
  const input = document.querySelector(selector);
  const t0 = performance.now();
  input.value = String(value);
  input.dispatchEvent(new Event('input', {bubbles: true}));
  input.dispatchEvent(new Event('change', {bubbles: true}));
  for (;;) {
    const i = img();
    if (i && i.src !== old && i.complete && i.naturalWidth > 0) return performance.now() - t0;
    await new Promise(r => setTimeout(r, 1));
  }
}"""


def checkpoints(dst: Path) -> dict[str, Path]:
    """64 px checkpoints of the default DCGAN and the default (cpu preset) StyleGAN2."""
    from facegan.config import load_params
    from facegan.train.checkpoint import save_checkpoint
    from facegan.train.run import make_trainer

    p = load_params(ROOT / "params.yaml")
    images = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    out = {}
    for kind, cfg in (("dcgan", p.train.model_copy(update={"model": "dcgan"})), ("stylegan2", p.transfer.pretrain)):
        t = make_trainer(cfg, images, None, [], torch.device("cpu"))
        out[kind] = dst / kind / "checkpoint.pt"
        save_checkpoint(out[kind], t.state_dict())
    return out


def cases(models: dict) -> dict[str, tuple]:
    """name -> (model, library call for move i, page control selector, control value for move i)."""
    dc, sg = models["dcgan"], models["stylegan2"]
    return {
        "stylegan2 64px, SeFa amount slider": (
            "stylegan2",
            lambda i: sg.image(0, 1.0, direction=("sefa", 0, -4 + (i % 9))),
            "#amount input[type=range]",
            lambda i: -4 + (i % 9),
        ),
        "stylegan2 64px, psi slider": (
            "stylegan2",
            lambda i: sg.image(0, 0.3 + 0.05 * (i % 13)),
            "#psi input[type=range]",
            lambda i: round(0.3 + 0.05 * (i % 13), 2),
        ),
        "dcgan 64px, new seed": ("dcgan", lambda i: dc.image(100 + i), "#seed input", lambda i: 100 + i),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--no-browser", action="store_true", help="time the library render only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from facegan.latent import load_model

    tmp = Path(tempfile.mkdtemp(prefix="explore_bench_"))
    paths = checkpoints(tmp)
    models = {k: load_model(v) for k, v in paths.items()}
    table = cases(models)
    use_browser = not args.no_browser and CHROMIUM.is_file()
    with pages(paths) if use_browser else contextlib.nullcontext() as page_of:
        render: dict[str, list[float]] = {c: [] for c in table}
        browser: dict[str, list[float]] = {c: [] for c in table}
        for i in range(args.rounds + 2):  # cases and both measures interleaved; the first 2 rounds warm up
            for name, (kind, call, selector, value) in table.items():
                t0 = time.perf_counter()
                call(i)
                ms = (time.perf_counter() - t0) * 1000
                b = page_of[kind].evaluate(MOVE_JS, [selector, value(i)]) if use_browser else float("nan")
                if i >= 2:
                    render[name].append(ms)
                    browser[name].append(b)

    print(
        f"facegan explore, slider-move latency: torch {torch.__version__}, {args.threads} threads, "
        f"median of {args.rounds} interleaved moves (goal < {GOAL_MS:.0f} ms)"
    )
    print(f"{'case':40s} {'render ms':>10s} {'browser ms':>11s} {'browser / goal':>15s}")
    for name in table:
        r, b = statistics.median(render[name]), statistics.median(browser[name])
        print(f"{name:40s} {r:10.1f} {b:11.1f} {b / GOAL_MS:15.2f}")
    if not use_browser:
        print(f"(browser round trip not measured: {'--no-browser' if args.no_browser else f'{CHROMIUM} missing'})")


@contextlib.contextmanager
def pages(paths: dict[str, Path]):
    """kind -> a headless Chromium page on the explorer serving that checkpoint (servers in this process)."""
    from playwright.sync_api import sync_playwright

    from facegan.explore import serve

    servers = {kind: serve(str(path), port=None) for kind, path in paths.items()}
    try:
        with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
            ctx = p.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            out = {}
            for kind, (_, url) in servers.items():
                out[kind] = ctx.new_page()
                out[kind].goto(url)
                out[kind].wait_for_selector("#main-image img", timeout=120_000)
            yield out
            ctx.close()
    finally:
        for demo, _ in servers.values():
            demo.close()


if __name__ == "__main__":
    main()
