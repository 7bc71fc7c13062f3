"""`facegan report`'s table: rows of every kind of run, fitted to 80 columns without cutting a cell; --wide and
the files keep every column."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from conftest import logs_of
from facegan.runs_table import (
    ALL_COLUMNS,
    bar_chart,
    cyclegan_rows,
    human_seconds,
    ordered,
    print_table,
    rows_of,
    to_csv,
    to_markdown,
    transfer_rows,
)

T0 = 1_700_000_000_000


def run(
    run_id: str,
    seconds: float,
    tags: dict,
    metrics: dict | None = None,
    params: dict | None = None,
    status: str = "FINISHED",
):
    """An object shaped like an mlflow Run (info + data), `seconds` long."""
    info = SimpleNamespace(run_id=run_id, start_time=T0, end_time=T0 + int(seconds * 1000), status=status)
    return SimpleNamespace(info=info, data=SimpleNamespace(tags=tags, metrics=metrics or {}, params=params or {}))


def pipeline(run_id: str, dataset: str, fd: float, kid: float, seconds: float, model: str = "dcgan"):
    tags = {"dataset": dataset, "model": model, "loss": "nonsaturating", "d_variant": "plain", "augment": "none"}
    return run(
        run_id, seconds, tags, {"fd_dlib": fd, "kid_dlib": kid, "training.steps": 400.0}, {"train.freeze_d": "0"}
    )


def every_kind() -> list[dict]:
    """Two pipeline runs per dataset, the transfer story (pretrain + two fine-tunes), the CycleGAN."""
    rows = rows_of(
        [
            pipeline("aaaa0000ffff", "cartoon", 41.2345, 0.0123456, 721.1),
            pipeline("bbbb1111ffff", "cartoon", 38.91, 0.0101, 655.0),
            pipeline("cccc2222ffff", "sketch", 77.7777, 0.05, 301.2),
        ]
    )
    parent = run(
        "dddd3333ffff",
        1500,
        {"facegan.kind": "transfer", "source": "cartoon", "target": "sketch"},
        {"baseline.fd_dlib": 60.5},
        {
            "transfer.pretrain.model": "stylegan2",
            "transfer.pretrain.steps": "400",
            "transfer.finetune.model": "stylegan2",
            "transfer.finetune.loss": "nonsaturating",
            "transfer.finetune.steps": "150",
            "transfer.finetune.freeze_d": "0",
            "transfer.finetune.ada.enabled": "False",
            "transfer.finetune.diffaugment": "[]",
            "transfer.runs.freezed_ada.freeze_d": "2",
            "transfer.runs.freezed_ada.ada.enabled": "True",
        },
    )
    kids = [
        run("e0000000ffff", 900, {"stage": "train", "variant": "pretrain", "dataset": "cartoon"}),
        run("e1111111ffff", 200, {"stage": "train", "variant": "baseline", "dataset": "sketch"}),
        run("e2222222ffff", 25, {"stage": "evaluate", "variant": "baseline", "dataset": "sketch"}, {"fd_dlib": 60.5}),
        run("e3333333ffff", 210, {"stage": "train", "variant": "freezed_ada", "dataset": "sketch"}),
        run(
            "e4444444ffff",
            24,
            {"stage": "evaluate", "variant": "freezed_ada", "dataset": "sketch"},
            {"fd_dlib": 55.25, "kid_dlib": 0.031},
        ),
        run("e5555555ffff", 3, {"stage": "transfer-table", "dataset": "sketch"}),
    ]
    rows += transfer_rows(parent, kids)
    cyc = run(
        "ffff4444ffff",
        480,
        {"stage": "cyclegan", "a": "cartoon", "b": "sketch", "model": "cyclegan"},
        {"a_to_b.fd_dlib": 90.123, "a_to_b.kid_dlib": 0.07, "b_to_a.fd_dlib": 45.6, "b_to_a.kid_dlib": 0.02},
        {"cyclegan.loss": "lsgan", "cyclegan.steps": "400", "cyclegan.diffaugment": "[]"},
    )
    return ordered(rows + cyclegan_rows(cyc))


def render(rows: list[dict], width: int = 80, wide: bool = False) -> str:
    con = Console(width=width, record=True, file=io.StringIO())
    print_table(rows, wide=wide, console=con)
    return con.export_text()


def test_rows_of_every_kind():
    rows = every_kind()
    kinds = {(r["kind"], r["variant"]) for r in rows}
    assert kinds == {
        ("pipeline", ""),
        ("transfer", "pretrain"),
        ("transfer", "baseline"),
        ("transfer", "freezed_ada"),
        ("cyclegan", "cartoon->sketch"),
        ("cyclegan", "sketch->cartoon"),
    }
    by = {r["variant"]: r for r in rows if r["kind"] != "pipeline"}
    assert by["freezed_ada"]["augment"] == "ada" and by["freezed_ada"]["freeze_d"] == "2"
    assert by["baseline"]["augment"] == "none" and by["baseline"]["steps"] == 150
    assert by["baseline"]["wall_s"] == 225.0 and by["baseline"]["run"] == "e2222222"  # train + evaluate
    assert by["pretrain"]["dataset"] == "cartoon" and by["pretrain"]["fd_dlib"] is None
    assert by["cartoon->sketch"]["dataset"] == "sketch" and by["cartoon->sketch"]["fd_dlib"] == 90.123
    # grouped by dataset, best first, unscored last
    assert [(r["dataset"], r["fd_dlib"]) for r in rows] == [
        ("cartoon", 38.91),
        ("cartoon", 41.2345),
        ("cartoon", 45.6),
        ("cartoon", None),
        ("sketch", 55.25),
        ("sketch", 60.5),
        ("sketch", 77.7777),
        ("sketch", 90.123),
    ]


def test_table_fits_80_columns_without_cutting_a_cell():
    rows = every_kind()
    text = render(rows)
    lines = text.splitlines()
    assert "…" not in text and max(len(line) for line in lines) <= 80
    # empty in every row: gone
    for header in ("FD incep", "KID incep", "attr acc"):
        assert header not in text
    # numbers for people: 4 significant digits, minutes and seconds, integer steps
    for value in ("38.91", "41.23", "77.78", "90.12", "55.25", "0.01235", "12m 01s", "10m 55s", "3m 45s", "400"):
        assert value in text, value
    assert "721.1" not in text and "0.0123456" not in text
    for variant in ("pretrain", "baseline", "freezed_ada", "cartoon->sketch", "sketch->cartoon"):
        assert variant in text
    for model in ("dcgan", "stylegan2", "cyclegan"):
        assert model in text
    # each dataset named once, as its section's first row
    assert sum(line.lstrip().startswith("cartoon ") for line in lines) == 1
    assert sum(line.lstrip().startswith("sketch ") for line in lines) == 1
    assert "--wide" in text  # says what was hidden to fit


@pytest.mark.parametrize("width", [60, 80, 120])
def test_no_cell_is_cut_at_any_width(width):
    text = render(every_kind(), width)
    assert "…" not in text and all(len(line) <= width for line in text.splitlines())
    assert "90.12" in text and "freezed_ada" in text


def test_wide_keeps_every_column():
    text = render(every_kind(), width=250, wide=True)
    for header in ("FD incep", "FD dlib", "KID incep", "KID dlib", "attr acc", "freeze_d", "loss", "run", "kind"):
        assert header in text
    assert "aaaa0000" in text and "nonsaturating" in text and "lsgan" in text


def test_files_keep_every_column_and_full_precision():
    rows = every_kind()
    md = to_markdown(rows).splitlines()
    assert md[0] == "| " + " | ".join(ALL_COLUMNS) + " |"
    assert md[0].startswith("| run | dataset | model | loss | d_variant | augment | freeze_d | fd_inception | fd_dlib")
    assert len(md) == 2 + len(rows) and "| 721.1 |" in "\n".join(md) and "| 0.0123456 |" in "\n".join(md)
    csv = to_csv(rows).splitlines()
    assert csv[0] == ",".join(ALL_COLUMNS) and len(csv) == 1 + len(rows)


def test_transfer_study_with_seeds_reads_the_row_summaries():
    """Runs `<row>-s<seed>` get their settings from the row's summary run (kind "row"), which is no row itself."""
    parent = run("p", 10, {"facegan.kind": "transfer", "target": "sketch"}, {}, {"transfer.seeds": "[0, 1]"})
    kids = [
        run(
            f"t{seed}",
            100,
            {"facegan.kind": "stage", "stage": stage, "variant": f"ada-s{seed}", "dataset": "sketch"},
            {"fd_dlib": 50.0 + seed} if stage == "evaluate" else {},
        )  # fmt: skip
        for seed in (0, 1)
        for stage in ("train", "evaluate")
    ]
    params = {"train.model": "stylegan2", "train.ada.enabled": "True", "train.freeze_d": "2", "train.steps": "150"}
    kids.append(run("r", 0.1, {"facegan.kind": "row", "stage": "transfer-row", "variant": "ada"}, {}, params))
    rows = transfer_rows(parent, kids)
    assert [(r["variant"], r["fd_dlib"], r["augment"], r["freeze_d"], r["steps"]) for r in rows] == [
        ("ada-s0", 50.0, "ada", "2", 150),
        ("ada-s1", 51.0, "ada", "2", 150),
    ]
    assert all(r["wall_s"] == 200.0 for r in rows)


def test_human_seconds():
    assert [human_seconds(s) for s in (None, 3.21, 41, 721.1, 3725)] == ["-", "3.2s", "41s", "12m 01s", "1h 02m"]


def test_files_keep_the_digits_of_small_values():
    md = to_markdown(rows_of([pipeline("k", "cartoon", 41.2345, 1.1e-05, 10)]))
    assert "| 41.2345 | - | 1.1e-05 |" in md


def test_a_retried_stage_shows_its_finished_run():
    """Stage runs come newest first: a train that failed then finished, an evaluate that failed then finished
    (the row is the retries', their time summed); a stage that never finished shows its newest attempt."""
    parent = run("p", 10, {"facegan.kind": "transfer", "target": "sketch"})
    tags = {"variant": "ada", "dataset": "sketch"}
    kids = [
        run("ev2", 20, {"stage": "evaluate", **tags}, {"fd_dlib": 41.5}),
        run("ev1", 5, {"stage": "evaluate", **tags}, status="FAILED"),
        run("tr2", 100, {"stage": "train", **tags}),
        run("tr1", 300, {"stage": "train", **tags}, status="FAILED"),
        run("ev4", 2, {"stage": "evaluate", "variant": "plain"}, status="FAILED"),
        run("ev3", 1, {"stage": "evaluate", "variant": "plain"}, status="FAILED"),
    ]
    by = {r["variant"]: r for r in transfer_rows(parent, kids)}
    assert (by["ada"]["run"], by["ada"]["fd_dlib"], by["ada"]["wall_s"]) == ("ev2", 41.5, 120.0)
    assert (by["plain"]["run"], by["plain"]["fd_dlib"]) == ("ev4", None)


def test_augment_is_spelled_alike_on_pipeline_rows_their_tag_and_transfer_rows(tmp_path, monkeypatch):
    """ADA is `ada` everywhere (a pipeline run tagged before said `none`: its logged params decide)."""
    from conftest import tiny_params
    from facegan import track

    old = run("o", 1, {"dataset": "cartoon", "augment": "none"}, {}, {"train.ada.enabled": "True"})
    policies = {"train.ada.enabled": "False", "train.diffaugment": "['color', 'cutout']"}
    assert [r["augment"] for r in rows_of([old, run("d", 1, {}, {}, policies)])] == ["ada", "color,cutout"]

    def offline(*args):
        raise OSError("offline")

    monkeypatch.setattr(track, "client", offline)  # the parent's spec only: no store is made or reached
    tags = [
        track.pipeline_parent(p.tracking, "cartoon", p, tmp_path / name)["tags"]["augment"]
        for name, p in (("a", tiny_params(ada={"enabled": True})), ("d", tiny_params(diffaugment=["color"])))
    ]
    assert tags == ["ada", "color"]


def test_nan_scores_are_unscored_sorted_last_and_shown_empty():
    rows = ordered(
        rows_of([pipeline(n, "cartoon", fd, 0.1, 10) for n, fd in (("a", 50.0), ("n", math.nan), ("b", 40.0))])
    )
    assert [(r["run"], r["fd_dlib"]) for r in rows] == [("b", 40.0), ("a", 50.0), ("n", None)]
    assert "nan" not in to_markdown(rows) + to_csv(rows)


def test_chart_has_a_panel_per_dataset_in_its_own_metric(tmp_path, monkeypatch):
    """Distances to different real sets on one axis would rank what is not comparable; runs without the panel's
    metric are counted, not silently left out."""
    from matplotlib.figure import Figure

    saved: list = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **k: (saved.append(fig), Path(path).write_bytes(b"")))
    incep = run("i", 1, {"dataset": "cartoon", "model": "dcgan"}, {"fd_inception": 30.0, "fd_dlib": 35.0})
    bar_chart(ordered(every_kind() + rows_of([incep])), tmp_path / "chart.png")
    panels = [(ax.get_title(loc="left"), len(ax.patches)) for ax in saved[0].axes]
    assert panels == [
        ("cartoon: fd_inception (lower is better); 4 run(s) without it not shown", 1),
        ("sketch: fd_dlib (lower is better)", 4),
    ]


def test_dataset_hashes_read_the_lock_of_the_project_root(tmp_path, monkeypatch, caplog):
    """`facegan report DATASET --root R` from another folder: R's dvc.lock, not the working directory's."""
    import yaml

    from facegan.report import dataset_hashes

    root = tmp_path / "project"
    processed = root / "data" / "processed" / "cartoon"
    processed.mkdir(parents=True)

    def lock(folder, path, md5):
        (folder / "dvc.lock").write_text(yaml.safe_dump({"stages": {"pack": {"outs": [{"path": path, "md5": md5}]}}}))

    lock(root, "data/processed/cartoon", "right.dir")
    lock(tmp_path, "project/data/processed/cartoon", "wrong.dir")
    monkeypatch.chdir(tmp_path)
    assert dataset_hashes(root, processed, root / "data" / "stats" / "cartoon") == {"dvc_md5": "right.dir"}
    (root / "dvc.lock").write_text("schema: '2.0'\nstages:\n  pack:\n  train: {outs: [data/x]}\n")  # odd shapes
    assert dataset_hashes(root, processed, root / "data" / "stats" / "cartoon") == {}
    # a merge left conflict markers in it: the report goes on, without the hash, and says why
    (root / "dvc.lock").write_text("stages:\n<<<<<<< HEAD\n  pack: {}\n=======\n  pack: {}\n>>>>>>> other\n")
    with logs_of(caplog, "facegan.report", logging.WARNING):
        assert dataset_hashes(root, processed, root / "data" / "stats" / "cartoon") == {}
    assert [r.getMessage() for r in caplog.records] == [
        f"{root / 'dvc.lock'}: not valid YAML at line 3, column 7: could not find expected ':' (while scanning a "
        "simple key that began at line 2, column 1); the report names no DVC hash of the packed set"
    ]


def test_the_table_files_are_written_whole_or_not_at_all_and_out_must_be_a_folder(tmp_path, monkeypatch):
    """A chart that fails half-way leaves the last fid_table.png as it was (savefig wrote into it directly); `--out`
    naming a file is one usage error, not a FileExistsError traceback."""
    import matplotlib.figure
    from typer.testing import CliRunner

    from facegan.cli import app
    from facegan.runs_table import write_table

    rows = ordered(rows_of([pipeline("a", "cartoon", 9.0, 0.1, 60.0), pipeline("b", "cartoon", 7.0, 0.1, 60.0)]))
    written = write_table(rows, tmp_path / "reports")
    before = {p.name: p.read_bytes() for p in written}
    assert before["fid_table.png"].startswith(b"\x89PNG")

    def broken(self, fname, **kwargs):
        Path(fname).write_bytes(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        write_table(rows[:1], tmp_path / "reports")
    assert (tmp_path / "reports" / "fid_table.png").read_bytes() == before["fid_table.png"]
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == sorted(before)  # no hidden half-chart

    (tmp_path / "afile").write_text("x")
    r = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "afile")])
    assert r.exit_code == 2 and "Invalid value for '--out'" in r.output and "Traceback" not in r.output


def test_rows_are_ranked_only_against_rows_of_the_same_sample_count(tmp_path, monkeypatch):
    """A Frechet distance from fewer generated images is biased upward: the table ranked pipeline runs (500
    samples), transfer fine-tunes (256) and CycleGAN directions (300) of one dataset against each other with no
    column saying so. Each row now says its count (`n`), read from each kind's own setting, and the ranking is
    within a count, most samples first."""
    from matplotlib.figure import Figure

    tags = {"dataset": "sketch", "model": "dcgan"}
    pipe = rows_of(
        [
            run("p500aaaa", 10, tags, {"fd_dlib": 0.30}, {"evaluate.num_samples": "500"}),
            run("p500bbbb", 10, tags, {"fd_dlib": 0.20}, {"evaluate.num_samples": "500"}),
            run("p100cccc", 10, tags, {"fd_dlib": 0.10}, {"evaluate.num_samples": "100"}),
        ]
    )
    parent = run(
        "tttt0000",
        10,
        {"facegan.kind": "transfer", "source": "cartoon", "target": "sketch"},
        {},
        {"transfer.num_samples": "256", "evaluate.num_samples": "500"},
    )
    kids = [run("t1", 5, {"stage": "evaluate", "variant": "ada", "dataset": "sketch"}, {"fd_dlib": 0.05})]
    study = transfer_rows(parent, kids)
    default = transfer_rows(
        run("tttt1111", 10, parent.data.tags, {}, {"transfer.num_samples": "None", "evaluate.num_samples": "500"}),
        [run("t2", 5, {"stage": "evaluate", "variant": "baseline", "dataset": "sketch"}, {"fd_dlib": 0.25})],
    )
    cyc = cyclegan_rows(
        run(
            "cccc9999",
            10,
            {"a": "cartoon", "b": "sketch"},
            {"a_to_b.fd_dlib": 0.15, "num_samples.a_to_b": 300.0, "b_to_a.fd_dlib": 0.4, "num_samples.b_to_a": 300.0},
            {"cyclegan.num_samples": "500"},
        )
    )
    rows = ordered(pipe + study + default + cyc)
    assert [(r["samples"], r["fd_dlib"]) for r in rows if r["dataset"] == "sketch"] == [
        (500, 0.20),
        (500, 0.25),
        (500, 0.30),
        (300, 0.15),
        (256, 0.05),
        (100, 0.10),
    ]
    header = next(line for line in render(rows, width=200).splitlines() if "FD dlib" in line and "dataset" in line)
    assert "samples" in ALL_COLUMNS and " n " in header
    saved: list = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **k: (saved.append(fig), Path(path).write_bytes(b"")))
    bar_chart(rows, tmp_path / "chart.png")  # a panel per count too
    assert [ax.get_title(loc="left") for ax in saved[0].axes if "sketch" in ax.get_title(loc="left")] == [
        f"sketch, n = {n}: fd_dlib (lower is better)" for n in (500, 300, 256, 100)
    ]


def test_rows_scored_otherwise_are_ranked_apart(tmp_path):
    """Distances of another Inception resize (evaluate.mode), real subset (max_real) or packed set were ranked in
    one list, and neither the table nor its files said which was which."""

    def scored(run_id: str, fd: float, mode: str = "legacy", max_real: str = "1000", sha: str | None = "a" * 64):
        r = pipeline(run_id, "cartoon", fd, 0.01, 60)
        r.data.params.update({"evaluate.mode": mode, "evaluate.max_real": max_real, "evaluate.num_samples": "500"})
        if sha:
            r.data.tags["dataset_sha256"] = sha
        return r

    runs = [scored("r1", 35.0), scored("r2", 31.0, mode="clean"), scored("r3", 28.0, max_real="50"), scored("r4", 33)]
    for r in runs:  # ranked by Inception's distance: its resize matters
        r.data.metrics["fd_inception"] = r.data.metrics["fd_dlib"]
    rows = ordered(rows_of(runs))
    assert [r["run"] for r in rows] == ["r2", "r4", "r1", "r3"]  # the legacy / 1000 group ranks r4 before r1
    for r in runs:  # by dlib's: the resize is no matter, the real subset still is
        del r.data.metrics["fd_inception"]
    assert [r["run"] for r in ordered(rows_of(runs))] == ["r2", "r4", "r1", "r3"]
    assert [r["run"] for r in ordered(rows_of([runs[0], runs[1], runs[3]]))] == ["r2", "r4", "r1"]
    assert {(r["mode"], r["max_real"], r["data"]) for r in rows} >= {("clean", "1000", "aaaaaaaa")}
    assert "| mode | max_real | data |" in to_markdown(rows).splitlines()[0] + "|"
    text = render(rows, width=200)
    assert "clean" in text and "max real" in text
    # one packed set recorded: rows without its hash (transfer, CycleGAN) rank with the others; two: apart
    same = ordered(rows_of([scored("s1", 2.0), scored("s2", 1.0, sha=None)]))
    assert [r["run"] for r in same] == ["s2", "s1"]
    changed = ordered(rows_of([scored("c1", 2.0), scored("c2", 1.0, sha="b" * 64), scored("c3", 0.5, sha=None)]))
    assert [r["run"] for r in changed] == ["c3", "c1", "c2"]  # no hash, set a, set b: three groups
    assert "every row: mode legacy, max real 1000, data aaaaaaaa" in render(
        ordered(rows_of([scored("u1", 1.0), scored("u2", 2.0)]))
    )
    bar_chart(changed, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 1000
