"""`facegan explore`: a local web app (gradio) over a trained model; the page is `facegan.explore.app`,
the work `facegan.latent`. The model is loaded once, before the server starts."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("facegan.explore")

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the server


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(ref: str, host: str = "127.0.0.1", port: int | None = 7860, threads: int = 0, tracking=None):
    """Load `ref` (see facegan.latent.resolve), build the page and start serving it in the background; returns
    (blocks, url): `blocks.block_thread()` waits, `blocks.close()` stops. Raises facegan.latent.ExploreError
    before anything is served when the model is unusable."""
    import torch

    from facegan.latent import ExploreError, Models

    if threads:
        torch.set_num_threads(threads)
    models = Models(tracking, paths=host in LOOPBACK)  # served beyond this machine: no file paths from the page
    model, source = models.get(ref)
    from facegan.explore.app import CSS, THEME, build

    demo = build(model, source, models)
    demo.queue(default_concurrency_limit=1)
    try:
        _, url, _ = demo.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=True,
            quiet=True,
            theme=THEME,
            css=CSS,
            ssr_mode=False,
            show_error=False,
            footer_links=[],
        )
    except OSError as e:  # the port is taken, the address is not this machine's
        raise ExploreError(
            f"cannot serve on {host}:{port}: {e} (choose another --port, or 0 for any free one)"
        ) from None
    log.info("serving %s (%s) at %s", source.label, model.describe(), url)
    return demo, url
