"""Serve the facegan deployments (one long-running process; the Prefect UI shows and triggers them).

    python pipelines/serve.py [--params params.yaml] [--root .] [--cron "0 2 * * *"] [--timezone Europe/Paris]

Per dataset in params.yaml: `facegan-full/nightly-<dataset>` on the cron schedule (e.g. retrain
nightly when new photos arrive), plus unscheduled `facegan-train/<dataset>` and
`facegan-evaluate/<dataset>` to run by hand from the UI or `prefect deployment run`; and, when enabled
in params.yaml, `facegan-transfer/default` and `facegan-cyclegan/default`. The cron runs in --timezone (an IANA
name; default: this machine's zone when it names one, else UTC; the line printed at start says which).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flows import cyclegan, evaluate, full, train, transfer
from prefect import serve
from prefect.schedules import Cron

from facegan.config import ParamsError, load_params
from facegan.errors import first_line


def _zone(name: str | None) -> str | None:
    """`name` when it is an IANA time zone name (Europe/Paris), else None."""
    name = (name or "").strip().removeprefix(":")
    if not name or name.startswith("/"):
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


def local_timezone() -> tuple[str, str]:
    """(this machine's IANA time zone, where it was found): $TZ, the /etc/localtime link, /etc/timezone; UTC when
    none names one."""
    link = os.path.realpath("/etc/localtime")
    etc = Path("/etc/timezone")
    for where, name in (
        ("$TZ", os.environ.get("TZ")),
        ("/etc/localtime", link.split("/zoneinfo/", 1)[1] if "/zoneinfo/" in link else None),
        ("/etc/timezone", etc.read_text(encoding="utf-8", errors="replace") if etc.is_file() else None),
    ):
        if zone := _zone(name):
            return zone, f"this machine's, from {where}"
    return "UTC", "no IANA time zone found on this machine"


def deployments(params_file: Path, root: Path, cron: str, timezone: str = "UTC") -> list:
    params = load_params(params_file)  # bad params stop here, before anything is registered
    common = {"params_file": str(params_file.resolve()), "root": str(root.resolve())}
    out = []
    for ds in params.datasets:
        out.append(
            full.to_deployment(
                name=f"nightly-{ds}",
                schedules=[Cron(cron, timezone=timezone)],
                parameters={"dataset": ds, **common},
                description=f"the whole chain for {ds}, on a schedule",
                tags=["facegan", ds],
            )
        )
        out.append(train.to_deployment(name=ds, parameters={"dataset": ds, **common}, tags=["facegan", ds]))
        out.append(evaluate.to_deployment(name=ds, parameters={"dataset": ds, **common}, tags=["facegan", ds]))
    if params.transfer.enabled:
        out.append(transfer.to_deployment(name="default", parameters=common, tags=["facegan", "transfer"]))
    if params.cyclegan.enabled:
        out.append(cyclegan.to_deployment(name="default", parameters=common, tags=["facegan", "cyclegan"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--cron", default="0 2 * * *", help="schedule of the nightly full runs (cron, in --timezone)")
    ap.add_argument(
        "--timezone", help="IANA time zone of --cron, e.g. Europe/Paris (default: this machine's, else UTC)"
    )
    args = ap.parse_args()
    timezone, where = local_timezone() if args.timezone is None else (_zone(args.timezone), "--timezone")
    if timezone is None:
        ap.error(f"--timezone {args.timezone!r}: not an IANA time zone name (e.g. Europe/Paris, UTC)")
    if not args.root.is_dir():  # the deployments would make a new, empty project there every night
        ap.error(f"--root {str(args.root)!r}: no such folder (the project root, holding data/ and params.yaml)")
    try:
        Cron(args.cron, timezone=timezone)
    except ValueError as e:
        ap.error(
            f"--cron {args.cron!r}: {first_line(e)} (five fields: minute hour day month weekday, e.g. '0 2 * * *')"
        )
    try:
        served = deployments(args.params, args.root, args.cron, timezone)
    except ParamsError as e:
        ap.error(str(e))
    print(f"nightly runs: cron {args.cron!r} in time zone {timezone} ({where})", flush=True)
    serve(*served)


if __name__ == "__main__":
    main()
