"""Logging set-up shared by the CLI, the DVC stages and the Prefect flows."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str | None = None) -> None:
    """Rich-formatted logs on stderr; FACEGAN_LOG_LEVEL (default INFO) sets the level."""
    from rich.console import Console
    from rich.logging import RichHandler

    level = (level or os.environ.get("FACEGAN_LOG_LEVEL", "INFO")).upper()
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        # on stderr: rich's default console is stdout's, where logs would mix with what a command prints
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=True)],
        force=True,
    )
    for noisy in ("PIL", "matplotlib", "urllib3", "alembic", "git", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # its "Retrying (...) after connection broken" repeats, in five lines, what the one error or warning about
    # an unreachable tracking store says
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
