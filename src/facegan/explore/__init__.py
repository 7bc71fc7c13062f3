"""`facegan explore`: a local web app (gradio) over a trained model; the page is `facegan.explore.app`,
the work `facegan.latent`. The model is loaded once, before the server starts."""

from __future__ import annotations

import errno
import logging
import os
import socket

log = logging.getLogger("facegan.explore")

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the server


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _loopback_unproxied() -> None:
    """gradio checks its own URL over HTTP (httpx) before it returns: a proxy in the environment would answer
    that request (403, or refused), and `launch` fail. This machine's addresses never go through a proxy. Both
    spellings get the hosts either held (clients read the lower-case one first: one set alone would hide the
    other's hosts, e.g. an MLflow server the user's NO_PROXY exempts)."""
    hosts = [h.strip() for var in ("NO_PROXY", "no_proxy") for h in os.environ.get(var, "").split(",") if h.strip()]
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(dict.fromkeys([*hosts, *LOOPBACK]))


def address_problem(host: str, port: int | None) -> str | None:
    """Why the server could not listen on host:port (None: it can), said as gradio does not: it reports any
    failed bind as a port it could not find."""
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1], as gradio takes it
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        return f"--host {host}: not an address or a name this machine can resolve ({getattr(e, 'strerror', e)})"
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds (uvicorn)
        try:
            s.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use: choose another --port, or 0 for any free one"
            if e.errno == errno.EADDRNOTAVAIL:
                return f"--host {host}: not an address of this machine (127.0.0.1: this machine; 0.0.0.0: all)"
            return f"cannot listen on {host}:{port}: {e.strerror or e}"
    return None


def serve(ref: str, host: str = "127.0.0.1", port: int | None = 7860, threads: int = 0, tracking=None):
    """Load `ref` (see facegan.latent.resolve), build the page and start serving it in the background; returns
    (blocks, url): `blocks.block_thread()` waits, `blocks.close()` stops. Raises facegan.latent.ExploreError
    before anything is served when the model is unusable."""
    import torch

    from facegan.latent import ExploreError, Models

    if threads:
        torch.set_num_threads(threads)
    if problem := address_problem(host, port):
        raise ExploreError(problem)
    _loopback_unproxied()
    models = Models(tracking, paths=host in LOOPBACK)  # served beyond this machine: no file paths from the page
    model, source = models.get(ref)
    from facegan.explore.app import CSS, THEME, build

    demo = build(model, source, models)
    demo.queue(default_concurrency_limit=1)
    try:
        _, url, _ = demo.launch(
            server_name=host,
            server_port=port,
            share=False,  # never a public tunnel (GRADIO_SHARE, hosted notebooks): the page may name files here
            prevent_thread_lock=True,
            quiet=True,
            theme=THEME,
            css=CSS,
            ssr_mode=False,
            show_error=False,
            footer_links=[],
        )
    except OSError as e:  # taken between the check above and gradio's own bind
        raise ExploreError(f"cannot serve on {host}:{port}: {address_problem(host, port) or e}") from None
    log.info("serving %s (%s) at %s", source.label, model.describe(), url)
    return demo, url
