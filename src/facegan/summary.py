"""`facegan summary` (the end of `make run`): where the results are, the headline Frechet distance per dataset,
the transfer table, the CycleGAN's scores and the stage times, in a screenful. Everything but the stage times
is read from files, so it works when MLflow cannot be reached (the times are then skipped with a note)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facegan.config import Params, sqlite_file
from facegan.errors import message

REPORTS = Path("data") / "reports"
TRANSFER = Path("data") / "transfer"
CYCLEGAN = Path("data") / "cyclegan"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _num(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "-"


def _primary(scores: list[Any]) -> str:
    """The first of inception, dlib and attributes that scored any of `scores` (a project scored by attributes
    alone showed `fd_dlib -`); fd_dlib when none did."""
    scored = [
        k
        for k in ("fd_inception", "fd_dlib", "fd_attributes")
        if any(isinstance(s, dict) and s.get(k) is not None for s in scores)
    ]
    return scored[0] if scored else "fd_dlib"


def _mlflow_ui(uri: str, root: Path) -> str:
    """The command that browses the store (a sqlite path inside the project written relative to it)."""
    if (db := sqlite_file(uri)) is None:
        return f"open {uri}"
    path = Path(db[0])
    if path.is_absolute() and path.is_relative_to(root.resolve()):
        uri = f"sqlite:///{path.relative_to(root.resolve())}{db[1]}"
    mlflow = ".venv/bin/mlflow" if (root / ".venv" / "bin" / "mlflow").is_file() else "mlflow"
    return f"{mlflow} ui --backend-store-uri {uri}"


def where(p: Params, root: Path, uri: str) -> list[str]:
    """Where to look: sample grids, tables, the CycleGAN's translations, the UIs."""
    have = [d for d in p.datasets if (root / REPORTS / d / "samples.png").is_file()]
    lines = ["Results (`facegan report` prints the FID table of every run):"]
    if have:
        lines.append(f"  samples    {REPORTS}/<dataset>/samples.png  ({', '.join(have)})")
    if (root / TRANSFER / "fid_table.md").is_file():
        lines.append(f"  transfer   {TRANSFER}/fid_table.md")
    if (root / CYCLEGAN / "model" / "translated_a_to_b.png").is_file():  # not a CycleGAN that is off
        lines.append(f"  cyclegan   {CYCLEGAN}/model/translated_{{a_to_b,b_to_a}}.png")
    lines.append(f"  MLflow UI  {_mlflow_ui(uri, root)}")
    lines.append("  explorer   make explore")
    return lines


def headline(p: Params, root: Path) -> list[str]:
    """The final scores per dataset (data/reports/<dataset>/metrics.json), each in its own primary metric (one
    dataset scored by Inception does not leave another, scored by dlib alone, without a number)."""
    found = {d: _read_json(root / REPORTS / d / "metrics.json") for d in p.datasets}
    width = max(len(d) for d in found)
    lines = ["Frechet distance per dataset, lower is better (inception, dlib or attributes):"]  # the first scored
    for d, m in found.items():
        if not isinstance(m, dict):
            there = (root / REPORTS / d / "metrics.json").exists()  # but not a JSON mapping: cut off or edited
            why = f"{REPORTS}/{d}/metrics.json cannot be read (cut off or edited?)" if there else "no report yet"
            lines.append(f"  {d:<{width}}  {why} (dvc repro report@{d})")
            continue
        metric = _primary([m])
        kid = metric.replace("fd_", "kid_")
        steps = (m.get("training") or {}).get("steps")
        lines.append(
            f"  {d:<{width}}  {metric} {_num(m.get(metric)):>7}   {kid} {_num(m.get(kid)):>8}"
            + (f"   {steps} steps" if steps is not None else "")
        )
    return lines


def _settings(r: dict) -> str:
    parts = ["scratch"] if r.get("pretrained") is False else []
    parts += [f"{k} {r[k]}" for k in ("freeze_d", "augment") if r.get(k) is not None]
    return "  ".join(parts)


def _transfer_rows(data: Any) -> tuple[str, list[tuple[str, float | None, str, str]]] | None:
    """(metric, [(row, value, shown, settings)]) of fid_table.json: the study's `rows` (mean ± std over the
    seeds) or the single-seed `runs` of older tables; None when it is neither."""
    if not isinstance(data, dict):
        return None
    rows, runs = data.get("rows"), data.get("runs")
    if isinstance(rows, dict) and rows and all(isinstance(r, dict) for r in rows.values()):
        finals = [r.get("final") or {} for r in rows.values()]
        ext = next((k for k in ("inception", "dlib", "attributes") if any(k in f for f in finals)), None)
        if ext is None:  # a table of runs not evaluated yet
            return "no final distances yet", [(name, None, "-", _settings(r)) for name, r in rows.items()]
        out = []
        n = len(data.get("seeds") or [])
        for name, r in rows.items():
            f = (r.get("final") or {}).get(ext) or {}
            mean = f.get("mean")
            spread = f.get("n", n) > 1  # a row some seeds lack a distance for may have one value
            shown = "-" if mean is None else f"{_num(mean)} ± {_num(f.get('std'))}" if spread else _num(mean)
            out.append((name, mean, shown, _settings(r)))
        return f"fd_{ext}" + (f", mean ± std over {n} seeds" if n > 1 else ""), out
    if isinstance(runs, dict) and runs and all(isinstance(r, dict) for r in runs.values()):
        metric = _primary(list(runs.values()))
        return metric, [(name, r.get(metric), _num(r.get(metric)), _settings(r)) for name, r in runs.items()]
    return None


def transfer(root: Path, limit: int = 6) -> list[str]:
    """The transfer table: its rows best first (fid_table.json), else the first lines of fid_table.md."""
    data = _read_json(root / TRANSFER / "fid_table.json")
    if found := _transfer_rows(data):
        metric, rows = found
        best = sorted(rows, key=lambda r: (r[1] is None, r[1] or 0.0))
        width = max(len(r[0]) for r in best[:limit])
        shown = max(len(r[2]) for r in best[:limit])
        lines = [f"Transfer {data.get('source', '?')} -> {data.get('target', '?')} ({metric}):"]
        lines += [f"  {name:<{width}}  {text:>{shown}}   {how}".rstrip() for name, _, text, how in best[:limit]]
        if len(best) > limit:
            lines.append(f"  ... {len(best) - limit} more rows in {TRANSFER}/fid_table.md")
        return lines
    md = root / TRANSFER / "fid_table.md"
    if not md.is_file():
        return []
    text = [line for line in md.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [f"Transfer ({md.relative_to(root)}):"] + [f"  {line}" for line in text[: limit + 2]]


def cyclegan(root: Path) -> list[str]:
    """The CycleGAN's distance per direction beside the untranslated images' (data/cyclegan/metrics.json)."""
    m = _read_json(root / CYCLEGAN / "metrics.json")
    if not isinstance(m, dict):
        if not (root / CYCLEGAN / "metrics.json").exists():
            return []
        return [f"CycleGAN: {CYCLEGAN}/metrics.json cannot be read (cut off or edited?): dvc repro cyclegan"]
    metric = _primary([m.get("a_to_b"), m.get("b_to_a")])
    names = {"a_to_b": f"{m.get('a', 'a')}->{m.get('b', 'b')}", "b_to_a": f"{m.get('b', 'b')}->{m.get('a', 'a')}"}
    parts = [
        f"{names[d]} {_num(s.get(metric))} (untranslated {_num(s.get(f'{metric}_untranslated'))})"
        for d in ("a_to_b", "b_to_a")
        if isinstance(s := m.get(d), dict)
    ]
    return [f"CycleGAN ({metric}): " + ", ".join(parts)] if parts else []


def stage_times(p: Params, top: int = 5) -> list[str]:
    """The timings table of the latest execution, or one line saying why it is skipped."""
    if not p.tracking.enabled:
        return ["Stage times: skipped (tracking.enabled is false)"]
    from facegan import timings

    try:
        found = timings.collect(p.tracking)
    except Exception as e:  # noqa: BLE001 - the summary works from files alone: any failure of MLflow is a note
        return [f"Stage times: skipped ({message(e)})"]
    table = timings.render(found, top, header=False).splitlines()
    return ["Longest stages (MLflow, latest execution: time, share of the total):", *(f"  {t}" for t in table)]


def summary(p: Params, root: Path = Path("."), top: int = 5) -> str:
    """The whole summary as text (about 25 lines: headings flush left, their lines indented)."""
    from facegan import track

    parts = [
        where(p, root, track.tracking_uri(p.tracking)),
        headline(p, root) + cyclegan(root),
        transfer(root),
        stage_times(p, top),
    ]
    return "\n".join(line for part in parts for line in part) + "\n"
