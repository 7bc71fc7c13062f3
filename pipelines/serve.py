"""Serve the facegan deployments (one long-running process; the Prefect UI shows and triggers them).

    python pipelines/serve.py [--params params.yaml] [--root .] [--cron "0 2 * * *"]

Per dataset in params.yaml: `facegan-full/nightly-<dataset>` on the cron schedule (e.g. retrain
nightly when new photos arrive), plus unscheduled `facegan-train/<dataset>` and
`facegan-evaluate/<dataset>` to run by hand from the UI or `prefect deployment run`; and, when enabled
in params.yaml, `facegan-transfer/default` and `facegan-cyclegan/default`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flows import cyclegan, evaluate, full, train, transfer
from prefect import serve

from facegan.config import load_params


def deployments(params_file: Path, root: Path, cron: str) -> list:
    params = load_params(params_file)  # bad params stop here, before anything is registered
    common = {"params_file": str(params_file.resolve()), "root": str(root.resolve())}
    out = []
    for ds in params.datasets:
        out.append(
            full.to_deployment(
                name=f"nightly-{ds}",
                cron=cron,
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
    ap.add_argument("--cron", default="0 2 * * *", help="schedule of the nightly full runs (cron, server time zone)")
    args = ap.parse_args()
    serve(*deployments(args.params, args.root, args.cron))


if __name__ == "__main__":
    main()
