"""Reports from hand-made records: what they draw, flag and refuse to claim."""

import multiprocessing
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from ctxenc.results import plots
from ctxenc.results.figures import detections_figure
from ctxenc.results.paper import DETECTION, TABLE2
from ctxenc.results.plots import line_style
from ctxenc.results.records import COLUMNS, replace_records, read_records, with_methods
from ctxenc.results.report import write_report
from ctxenc.results.samples import detection_samples
from ctxenc.results.selections import edge_lines, edge_selections
from ctxenc.results.provenance import wall_time_table
from ctxenc.results.tables import beside_paper, column_table, final_budget


def cell_rows(method: str, seed: int, protocol: str, metrics: dict[str, float], **extra) -> list[dict]:
    base = {"suite": "t", "dataset": "fashion_scenes", "method": method, "pretext": method.split("/")[0],
            "encoder": "small", "seed": seed, "protocol": protocol, "pretrain_seconds": 1.0, **extra}
    return [{**base, "metric": k, "value": v} for k, v in metrics.items()]


def write(folder: Path, rows: list[dict], report: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).reindex(columns=COLUMNS).to_csv(folder / "records.csv", index=False)
    (folder / "suite.yaml").write_text(yaml.safe_dump({"suite": "t", **({"report": report} if report else {})}))
    return folder


@pytest.fixture
def undrawn(monkeypatch):
    """Charts built but not rendered: for tests of a report's text, which rendering (a PNG and a
    PDF per chart) would only slow down. tests/test_figures.py checks the files."""
    def close(fig, out):
        plots.plt.close(fig)
        return Path(out)
    monkeypatch.setattr(plots, "save_figure", close)


def layerwise_rows(seeds=(0, 1, 2)) -> list[dict]:
    rows = []
    for i, method in enumerate(["random", "autoencoder", "context_encoder/random_region/l2"]):
        for seed in seeds:
            rows += cell_rows(method, seed, "layerwise_probe",
                              {f"map@conv{k}": 0.3 + 0.01 * (i + k) + 0.001 * seed for k in (1, 2, 3)})
    return rows


def test_a_layerwise_only_suite_reports_what_it_holds(tmp_path):
    # The suite's report names columns nobody measured: they stay "–", and no bar chart is drawn.
    report = {"columns": [{"title": "cls", "protocol": "finetune", "metric": "map@100%"}]}
    out = write(tmp_path / "configured", layerwise_rows(), report)
    text = write_report(out).read_text()
    assert "## Curves" in text and (out / "layerwise-layerwise_probe.png").is_file()
    assert not (out / "bars.png").exists() and "![bars]" not in text
    # Without a report section the columns are the headline metrics the records hold.
    out = write(tmp_path / "default", layerwise_rows())
    text = write_report(out).read_text()
    assert (out / "bars.png").is_file() and "Layer-wise probe: mAP (conv3)" in text  # titled by human names
    assert "Holm-adjusted" in text and "at this budget" in text


def test_primary_tests_are_named_and_come_first(tmp_path, undrawn):
    ce = "context_encoder/random_region/l2"
    report = {"columns": [{"title": "conv3", "protocol": "layerwise_probe", "metric": "map@conv3"},
                          {"title": "conv1", "protocol": "layerwise_probe", "metric": "map@conv1"}],
              "comparisons": [["autoencoder", "random"]],
              "primary_comparisons": [[ce, "random"]], "primary_columns": ["conv3"]}
    text = write_report(write(tmp_path, layerwise_rows(), report)).read_text()
    assert "the 1 **primary** test, declared in the suite before it ran" in text
    assert "the other 3 tests are exploratory" in text
    assert text.index(f"- Does **{ce}** beat **random**? (primary)") < text.index("**autoencoder** beat **random**? (exploratory)")
    assert "| family" in (tmp_path / "table.md").read_text()


def test_every_table_is_also_latex(tmp_path, undrawn):
    out = write(tmp_path, layerwise_rows())
    write_report(out)
    tex = (out / "table.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 3  # our table, the layer-wise numbers, the comparisons
    assert r"context\_encoder/random\_region/l2" in tex  # escaped for LaTeX
    assert "| random " in (out / "table.md").read_text()


def test_two_seeds_get_no_significance_mark(tmp_path, undrawn):
    out = write(tmp_path, layerwise_rows(seeds=(0, 1)))
    text = write_report(out).read_text()
    assert "not tested (2 seeds)" in text and "**yes**" not in text and "outside seed noise" not in text


def segmentation_rows() -> list[dict]:
    rows = []
    for method, miou in (("random", 0.06), ("autoencoder", 0.09)):
        for seed in range(3):
            rows += cell_rows(method, seed, "segmentation_frozen",
                              {"miou": miou + 0.001 * seed, "miou_all_background": 0.062,
                               "pixel_accuracy": 0.67, "pixel_accuracy_all_background": 0.678,
                               "lr": 0.1 if seed else 0.01, "lr_min": 1e-4, "lr_max": 0.1,
                               "epochs": 30 if method == "random" else 12, "max_epochs": 30})
    return rows


def test_trivial_references_are_rows_and_bounds_on_claims(tmp_path, undrawn):
    report = {"columns": [{"title": "mIoU", "protocol": "segmentation_frozen", "metric": "miou"},
                          {"title": "pixel accuracy", "protocol": "segmentation_frozen", "metric": "pixel_accuracy"}],
              "comparisons": [["autoencoder", "random"]]}
    out = write(tmp_path, segmentation_rows(), report)
    table = column_table(read_records(out / "records.csv"), report["columns"])
    assert table.loc["all background (reference)", "mIoU"] == "6.2"
    assert table.loc["all background (reference)", "pixel accuracy"] == "67.8"
    text = write_report(out).read_text()
    assert "- random does not beat the all background on mIoU (6.1 vs 6.2)" in text
    # The autoencoder beats random on pixel accuracy by 0 and falls short of all background: never "better".
    assert "pixel accuracy: **does not beat the all background** (67.0 vs 67.8)" in text


def test_selections_on_a_grid_edge_are_counted():
    records = pd.DataFrame(segmentation_rows())
    edges = edge_selections(records).set_index("selection")
    assert edges.loc["lr", "runs"] == 6 and edges.loc["lr", "at_high"] == 4 and edges.loc["lr", "at_low"] == 0
    assert edges.loc["epochs", "at_high"] == 3
    lines = edge_lines(edge_selections(records))
    assert lines[0].startswith("- segmentation_frozen, lr: on the grid's edge in 4 of 6 runs (highest value 4: random seed 1")
    assert "- segmentation_frozen, epochs: on the grid's edge in 3 of 6 runs" in lines[1]


def test_an_edge_rate_shows_its_margin_on_validation_when_recorded():
    records = pd.DataFrame(segmentation_rows())
    margins = pd.DataFrame(cell_rows("random", 1, "segmentation_frozen", {"lr_margin": 0.004}))
    lines = edge_lines(edge_selections(pd.concat([records, margins])))
    assert "random seed 1 (by 0.4), random seed 2, " in lines[0]  # seed 2 predates margins: no "(by"
    assert lines[-1].startswith("- (by m): the chosen learning rate's best validation score was m points above")
    assert not any("(by m)" in line for line in edge_lines(edge_selections(records)))


def test_a_one_value_grid_has_no_edge():
    records = pd.DataFrame(segmentation_rows())
    one_rate = records["metric"].isin(["lr", "lr_min", "lr_max"])
    records.loc[one_rate, "value"] = 0.03  # every run trained at the grid's only rate
    edges = edge_selections(records).set_index("selection")
    assert "lr" not in edges.index and edges.loc["epochs", "at_high"] == 3


def test_old_records_derive_methods_and_read_missing_columns_empty(tmp_path):
    old = pd.DataFrame({"suite": ["demo"] * 2, "dataset": "fashion_mnist", "pretext": ["context_encoder", "random"],
                        "encoder": "small", "mask": ["random_region", "none"], "loss": ["l2", "none"], "seed": 0,
                        "protocol": "knn", "metric": "accuracy", "value": [0.8, 0.7]})
    old.to_csv(tmp_path / "records.csv", index=False)
    records = read_records(tmp_path / "records.csv")
    assert list(records.columns[: len(COLUMNS)]) == COLUMNS and records["commit"].isna().all()
    assert with_methods(records)["method"].tolist() == ["context_encoder/random_region/l2", "random"]


def _append_many(path: str, worker: int) -> None:
    for i in range(5):
        replace_records(path, [{"suite": "t", "method": f"w{worker}", "seed": i, "metric": "m", "value": float(i)}])


def test_appends_from_several_processes_lose_nothing(tmp_path):
    path = tmp_path / "records.csv"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(path), w)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    records = read_records(path)
    assert len(records) == 20 and records.groupby("method").size().tolist() == [5] * 4
    assert (tmp_path / "records.csv.lock").exists()


def test_a_pretraining_sweep_is_plotted_and_tables_use_the_longest(tmp_path):
    rows = []
    for seed in range(2):
        rows += cell_rows("random", seed, "finetune", {"map@100%": 0.30}, pretrain_steps=0)
        for steps, value in ((0, 0.30), (500, 0.32), (2000, 0.35)):
            rows += cell_rows("autoencoder", seed, "finetune", {"map@100%": value + 0.001 * seed}, pretrain_steps=steps)
    out = write(tmp_path, rows)
    text = write_report(out).read_text()
    assert (out / "sweep.png").is_file() and "## How much pretraining is enough?" in text
    table = column_table(final_budget(read_records(out / "records.csv")), [{"title": "map", "protocol": "finetune",
                                                                           "metric": "map@100%"}])
    assert table.loc["autoencoder", "pretraining steps"] == "2000" and table.loc["autoencoder", "map"] == "35.0 ± 0.1"
    assert table.loc["random", "pretraining steps"] == "0" and table.loc["random", "map"] == "30.0 ± 0.0"


def test_thirteen_methods_get_thirteen_different_lines():
    styles = [line_style(i) for i in range(13)]  # Table 2's rows: tab10 alone repeats 3 colours
    assert len({(s["color"], s["marker"], s["linestyle"]) for s in styles}) == 13
    assert styles[0]["color"] == styles[10]["color"] and styles[0]["marker"] != styles[10]["marker"]


def test_provenance_names_commits_and_warns_when_they_differ(tmp_path, undrawn):
    rows = []
    for seed, commit in ((0, "abc123"), (1, "def456+dirty")):
        rows += cell_rows("random", seed, "knn", {"accuracy": 0.5}, commit=commit, torch="2.14.1", threads=1,
                          cpu="Test CPU", wall_seconds=60.0)
    text = write_report(write(tmp_path, rows)).read_text()
    assert "**These records come from 2 different code commits (abc123, def456+dirty)" in text
    assert "uncommitted changes" in text and "`Test CPU`" in text
    walls = wall_time_table(read_records(tmp_path / "records.csv"))
    assert walls.loc["total"].tolist() == ["2", "2.0"]  # 2 cells of 60 s: 2 minutes


def test_each_pretraining_length_of_a_sweep_is_its_own_cell_in_the_wall_time(tmp_path):
    rows = []
    for steps in (0, 500, 2000):
        rows += cell_rows("autoencoder", 0, "knn", {"accuracy": 0.5}, pretrain_steps=steps, wall_seconds=30.0)
    walls = wall_time_table(read_records(write(tmp_path, rows) / "records.csv"))
    assert walls.loc["knn"].tolist() == ["3", "1.5"]


def test_the_paper_table_has_detection_and_doersch():
    assert TABLE2.row_of("random/init=pytorch") == "Random Gaussian" and TABLE2.row_of("supervised") == "ImageNet"
    assert TABLE2.value("context_prediction", DETECTION) == 46.6 and TABLE2.value("autoencoder", DETECTION) == 41.9
    assert TABLE2.row_of("context_encoder/random_region/l2/loss_region=image") is None
    ours = pd.DataFrame({"pretraining time": ["1 s"], "det": ["40.0 ± 1.0"]}, index=["context_prediction"])
    side = beside_paper(ours, [{"title": "det", "paper": DETECTION}], TABLE2)
    assert side.loc["context_prediction", f"{DETECTION} (paper)"] == "46.6"
    assert side.loc["(Wang et al.)", f"{DETECTION} (paper)"] == "47.4" and side.loc["(Wang et al.)", "det (ours)"] == "–"


def test_detection_predictions_are_loaded_and_drawn(tmp_path):
    records = pd.DataFrame(cell_rows("context_encoder/random_region/l2", 0, "detection", {"map": 0.4, "map_coco": 0.2}))
    folder = tmp_path / "runs" / "context_encoder-random_region-l2" / "seed0"
    folder.mkdir(parents=True)
    predictions = {"boxes": [torch.tensor([[2.0, 3.0, 20.0, 25.0]])] * 2, "labels": [torch.tensor([1])] * 2,
                   "scores": [torch.tensor([0.9])] * 2}
    torch.save(predictions, folder / "predictions-detection.pt")
    found = detection_samples(tmp_path, records, "detection")
    assert list(found) == ["context_encoder/random_region/l2"] and found["context_encoder/random_region/l2"]["scores"][0][0] == pytest.approx(0.9)
    images = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    true = torch.tensor([[[1, 2, 3, 20, 24], [-1, 0, 0, 0, 0]]] * 2)
    out = detections_figure(images, true, found, ["a", "b"], tmp_path / "det.png")
    assert out.stat().st_size > 1000


def test_figures_whose_inputs_are_gone_are_kept_not_dropped(tmp_path, undrawn):
    # A fresh clone has records and figures but no run folders (checkpoints, saved predictions).
    rows = layerwise_rows() + cell_rows("context_encoder/random_region/l2", 0, "detection", {"map": 0.4, "map_coco": 0.2},
                                        checkpoint="runs/context_encoder-random_region-l2/seed0/checkpoint.pt")
    out = write(tmp_path, rows)
    text = write_report(out).read_text()
    assert "inpainting.png" not in text and "detections-detection.png" not in text  # nothing drawn, nothing kept
    for name in ("inpainting.png", "detections-detection.png"):
        (out / name).write_bytes(b"an earlier drawing")
    text = write_report(out).read_text()
    assert "![inpainting](inpainting.png)" in text
    assert "![detection: predicted and true boxes](detections-detection.png)" in text
    assert text.count("Kept as an earlier report drew it") == 2
    assert (out / "inpainting.png").read_bytes() == b"an earlier drawing"


def test_a_column_title_split_at_its_comma_or_given_twice_is_refused():
    """An unquoted title in a YAML flow mapping splits at its comma into a second key; the two
    columns it made were both titled 'segmentation mIoU (fine-tuned' and crashed the difference plot."""
    from ctxenc.errors import UserError
    from ctxenc.results.report import ReportConfig

    split = yaml.safe_load("columns: [{title: mIoU (fine-tuned, 200 scenes), protocol: seg, metric: miou}]")
    with pytest.raises(UserError, match="unknown key '200 scenes\\)'.*quote a title that holds a comma"):
        ReportConfig(**split)
    twice = [{"title": "mIoU", "protocol": p, "metric": "miou"} for p in ("a", "b")]
    with pytest.raises(UserError, match="two report columns are both titled 'mIoU'"):
        ReportConfig(columns=twice)
    quoted = yaml.safe_load("columns: [{title: 'mIoU (fine-tuned, 200 scenes)', protocol: seg, metric: miou, paper: x}]")
    assert ReportConfig(**quoted).columns[0]["title"] == "mIoU (fine-tuned, 200 scenes)"
