"""Paper-ready output: human names, PDF beside every PNG, the difference plot, honest one-seed
cells and LaTeX that compiles."""

import re
import shutil
import subprocess

import pandas as pd
import pytest
import yaml
from PIL import Image

from ctxenc.errors import UserError
from ctxenc.results import plots
from ctxenc.results.comparisons import compare
from ctxenc.results.names import Names, wrap
from ctxenc.results.records import COLUMNS
from ctxenc.results.report import ReportConfig, write_report
from ctxenc.results.tables import column_table, latex_escape, latex_table

CE = "context_encoder/random_region/l2"


def rows(values: dict[str, list[float]], protocol="linear_probe", metric="accuracy") -> list[dict]:
    """One record per (method, seed): values[method][seed]."""
    return [{"suite": "t", "dataset": "fashion_mnist", "method": m, "pretext": m.split("/")[0], "encoder": "small",
             "seed": s, "protocol": protocol, "metric": metric, "value": v, "pretrain_seconds": 1.0}
            for m, vs in values.items() for s, v in enumerate(vs)]


def write(folder, records: list[dict], report: dict | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records).reindex(columns=COLUMNS).to_csv(folder / "records.csv", index=False)
    (folder / "suite.yaml").write_text(yaml.safe_dump({"suite": "t", **({"report": report} if report else {})}))
    return folder


@pytest.fixture
def drawn(monkeypatch):
    """Every text a figure would print, by file name, instead of writing it (and faster)."""
    texts = {}

    def capture(fig, out):
        found = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
        texts[out.name] = [t for t in found if t]
        plots.plt.close(fig)
        return out
    monkeypatch.setattr(plots, "save_figure", capture)
    return texts


def test_default_names_are_human():
    names = Names()
    assert names.method(CE) == "Context encoder (random region, L2)"
    assert names.method("context_encoder/random_region/l2/loss_region=hole+ring") == (
        "Context encoder (random region, L2, loss region: hole+ring)")
    assert names.column("linear_probe", "accuracy") == "Linear probe: accuracy"
    assert names.metric("map@10%") == "mAP (10% labels)" and names.metric("map@conv3") == "mAP (conv3)"
    assert names.dataset("fashion_mnist") == "Fashion-MNIST" and names.axis("miou") == "mIoU (%)"


def test_a_display_mapping_wins_and_percent_is_not_doubled():
    names = Names({CE: "CE (random region)", "linear_probe": "Linear probe (frozen)", "accuracy": "accuracy (%)"})
    assert names.method(CE) == "CE (random region)" and names.method("random") == "Random init"
    assert names.column("linear_probe", "accuracy") == "Linear probe (frozen): accuracy (%)"
    assert names.axis("accuracy") == "accuracy (%)"
    with pytest.raises(UserError, match="display maps names to names"):
        ReportConfig(display={"random": 3})


def test_labels_wrap_at_word_boundaries_only():
    assert wrap("Context encoder (random region, L2)", 11) == "Context\nencoder\n(random\nregion, L2)"
    assert wrap("context_encoder/random_region/l2", 16) == "context_encoder/\nrandom_region/l2"
    assert wrap("supercalifragilistic x", 5) == "supercalifragilistic\nx"  # a long word keeps its line, whole
    label = "Context encoder (random region, L2, loss region: hole+ring)"
    for width in range(4, 40):
        assert wrap(label, width).replace("\n", " ") == label  # nothing cut, nothing lost


def test_every_figure_is_a_pdf_beside_a_200_dpi_png(tmp_path):
    records = rows({"random": [0.50, 0.52], CE: [0.53, 0.54]}, "finetune", "map@10%")
    records += rows({"random": [0.3, 0.31], CE: [0.33, 0.35]}, "finetune", "map@100%")
    out = write(tmp_path, records)
    text = write_report(out).read_text()
    pngs = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", text)
    assert {"bars.png", "differences.png", "label_fraction-finetune.png"} <= set(pngs)
    for name in pngs:
        assert Image.open(out / name).info["dpi"][0] == pytest.approx(200, abs=1)
        pdf = (out / name).with_suffix(".pdf")
        assert pdf.read_bytes().startswith(b"%PDF") and f"([PDF]({pdf.name}))" in text


def test_figures_print_display_names_and_unbroken_words(tmp_path, drawn):
    records = rows({"random": [0.50, 0.52, 0.51], CE: [0.53, 0.54, 0.52]})
    write_report(write(tmp_path, records, {
        "columns": [{"title": "probe", "protocol": "linear_probe", "metric": "accuracy"}],
        "comparisons": [[CE, "random"]],
        "display": {CE: "Context encoder (random region)", "probe": "Linear probe", "accuracy": "accuracy (%)"}}))
    bars, differences = " ".join(drawn["bars.png"]), " ".join(drawn["differences.png"])
    assert "Context encoder (random\nregion)" in bars or "Context encoder (random region)" in bars
    assert "Random init" in bars and "Linear probe" in bars and "accuracy (%)" in bars and "Fashion-MNIST" in bars
    assert "context_encoder" not in bars + differences and "random_" not in bars + differences
    assert "Linear probe" in differences and "− Random init" in differences


def test_the_difference_plot_draws_each_pairs_interval_and_n1_without_one(tmp_path, monkeypatch):
    records = pd.DataFrame(rows({"random": [0.50, 0.52, 0.51], CE: [0.53, 0.54, 0.52], "autoencoder": [0.6]}))
    columns = [{"title": "probe", "protocol": "linear_probe", "metric": "accuracy"}]
    results = compare(records, columns, [(CE, "random"), ("autoencoder", "random")])
    seen = {}

    def capture(fig, out):
        ax = fig.axes[0]
        seen["bars"] = [seg for c in ax.collections if hasattr(c, "get_segments") for seg in c.get_segments()]
        seen["texts"] = [t.get_text() for t in ax.texts]
        plots.plt.close(fig)
        return out
    monkeypatch.setattr(plots, "save_figure", capture)
    plots.difference_plot(results, tmp_path / "d.png", columns)
    ce = results.iloc[0]
    (x0, _), (x1, _) = seen["bars"][0]  # the one interval drawn: CE − random's 95% t interval, in points
    assert len(seen["bars"]) == 1 and (x0, x1) == pytest.approx((ce["ci_low"] * 100, ce["ci_high"] * 100))
    assert "+10.0, n = 1" in seen["texts"]  # autoencoder − random: one seed, a point and a note


def test_one_seed_prints_n_1_and_no_plus_minus(tmp_path, drawn):
    records = rows({"random": [0.50, 0.52, 0.51], "autoencoder": [0.6]})
    table = column_table(pd.DataFrame(records), [{"title": "probe", "protocol": "linear_probe", "metric": "accuracy"}])
    assert table.loc["autoencoder", "probe"] == "60.0 (n = 1)" and table.loc["random", "probe"] == "51.0 ± 1.0"
    out = write(tmp_path, records)
    text = write_report(out).read_text()
    for found in (text, (out / "table.md").read_text(), (out / "table.tex").read_text()):
        assert "60.0 (n = 1)" in found and "60.0 ±" not in found and "60.0 $\\pm$" not in found


def test_latex_escapes_every_special_character():
    assert latex_escape(r"95% & $x_1$ #{a}~^\ ") == (
        r"95\% \& \$x\_1\$ \#\{a\}\textasciitilde{}\textasciicircum{}\textbackslash{} ")
    assert latex_escape("38.0 ± 0.8, a − b, –, < 1 minute") == r"38.0 $\pm$ 0.8, a $-$ b, --, \textless{} 1 minute"


def test_table_tex_has_booktabs_and_no_live_percent(tmp_path, drawn):
    out = write(tmp_path, rows({"random": [0.50, 0.52, 0.51], CE: [0.53, 0.54, 0.52]}))
    write_report(out)
    tex = (out / "table.tex").read_text()
    body = tex.splitlines()[1:]  # the first line is the file's own comment
    assert not [line for line in body if re.search(r"(?<!\\)%", line)]  # a bare % would comment out the rest
    assert r"\caption{Mean $\pm$ std over seeds (std with ddof = 1), in \%" in tex
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == tex.count(r"\begin{tabular}")
    assert r"context\_encoder/random\_region/l2" in tex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX engine here")
def test_table_tex_compiles(tmp_path):
    nasty = "% & $ # _ { } ~ ^ \\ ± − – < > |"
    frame = pd.DataFrame({f"col {nasty}": [f"cell {nasty}"]}, index=[f"row {nasty}"])
    (tmp_path / "table.tex").write_text(latex_table(f"caption {nasty} 95% t intervals.", frame))
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                                      "\\input{table.tex}\n\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "doc.pdf").is_file()
