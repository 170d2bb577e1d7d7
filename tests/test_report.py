"""The report command on a small sweep of real run folders (the run wiring on exact-table engines): its table
says what the summaries say, and its figures plot exactly the runs' values."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import pytest  # noqa: E402

from experiments.plotting import pareto_front  # noqa: E402
from experiments.report import make_report  # noqa: E402
from experiments.runs import variant_name  # noqa: E402
from experiments.tables import fmt_flops, fmt_pct, markdown_table  # noqa: E402
from experiments.synthetic import synthetic_run, synthetic_sweep  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SWEEP = {"methods": [["method=gsi"], ["method=rsd", "method.delta=0.6"], ["method=bon", "method.policy=small"],
                     ["method=bon", "method.policy=big"]],
         "n": [1, 4], "beta": [1.0, 4.0]}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """16 runs (4 methods x 2 n x 2 beta) on one dataset, a GSI threshold sweep on another, nested a level
    deeper, and one unfinished run (results.jsonl, no summary.json)."""
    root = tmp_path_factory.mktemp("runs")
    dirs = synthetic_sweep(root / "sweep_a", n_problems=30, sweep=SWEEP)
    for i, u in enumerate((0.3, 0.6, 0.75)):
        out = root / "nested" / "thresholds" / f"{i}_u={u}"
        synthetic_run(["dataset=olympiad", "method=gsi", "method.n=4", "beta=4", f"method.threshold={u}"], out,
                      n_problems=30)
        dirs.append(out)
    unfinished = root / "nested" / "killed"
    synthetic_run(["method=gsi", "method.n=2"], unfinished, n_problems=5)
    (unfinished / "summary.json").unlink()
    return {"root": root, "dirs": dirs, "unfinished": unfinished}


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return make_report([sweep["root"]], out), out


def summaries(sweep) -> dict[str, dict]:
    out = {}
    for d in sweep["dirs"]:
        s = json.loads((d / "summary.json").read_text())
        s["_method"] = json.loads((d / "experiment.json").read_text())["method"]
        out[str(d)] = s
    return out


def parse_markdown_table(text: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = lambda line: [c.strip() for c in line.strip("|").split(" | ")]  # noqa: E731
    return split(lines[0]), [split(line) for line in lines[2:]]


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_finds_every_run_recursively_and_lists_the_unfinished(sweep, report):
    rep, out = report
    assert sorted(r.path for r in rep["runs"]) == sorted(str(d) for d in sweep["dirs"])
    assert rep["unfinished"] == [sweep["unfinished"]]
    md = (out / "report.md").read_text()
    assert "## Unfinished runs" in md and "nested/killed`: 5 problems done" in md


def test_markdown_table_rows_match_the_summaries(sweep, report):
    rep, out = report
    header, rows = parse_markdown_table((out / "report.md").read_text())
    assert header[:15] == ["method", "dataset", "model", "n", "β", "threshold", "problems", "seeds",
                           "accuracy % [95% CI]", "acceptance % (steps)", "acceptance % (tokens)",
                           "π_B generated tokens", "step loop", "ideal FLOPs", "executed FLOPs"]
    assert len(rows) == len(sweep["dirs"]) == 19
    by_path = {str((out / row[-1].strip("`")).resolve()): dict(zip(header, row)) for row in rows}
    for path, s in summaries(sweep).items():
        row = by_path[str(Path(path).resolve())]
        m = s["_method"]
        assert row["method"] == variant_name(m)
        assert row["dataset"] == s["dataset"] and row["model"] == s["model"]
        assert row["n"] == str(m["n"]) and float(row["β"]) == s["beta"]
        want_thr = {"gsi": ("u", m.get("threshold")), "rsd": ("δ", m.get("delta"))}.get(m["name"])
        assert row["threshold"] == ("-" if want_thr is None else f"{want_thr[0]} = {want_thr[1]:g}")
        assert row["problems"] == str(s["n_problems"])
        lo, hi = s["accuracy_ci95"]
        assert row["accuracy % [95% CI]"] == f"{100 * s['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
        assert row["acceptance % (steps)"] == fmt_pct(s["acceptance_rate"])
        assert row["acceptance % (tokens)"] == fmt_pct(s["acceptance_rate_tokens"])
        assert (row["acceptance % (steps)"] == "-") == (m["name"] == "bon")
        assert row["seeds"] == "0"
        assert row["ideal FLOPs"] == fmt_flops(s["flops"]["total"])
        assert row["ideal FLOPs π_S"] == fmt_flops(s["flops"]["small"])
        assert row["ideal FLOPs π_B"] == fmt_flops(s["flops"]["big"])
        assert row["ideal FLOPs PRM"] == fmt_flops(s["flops"]["reward"])
        # The claim's columns: pi_B's generated tokens, the step loop without start-up, the executed FLOPs.
        assert row["π_B generated tokens"] == f"{s['tokens']['big']['generated']:,}"
        assert row["step loop"] == f"{s['measured']['step_loop_s']:.1f} s"
        assert row["executed FLOPs"] == fmt_flops(sum(s["measured"]["flops_executed"].values()))
    # Soft BoN with pi_S never calls pi_B, with pi_B never pi_S: the role columns show it.
    for row in by_path.values():
        if row["method"] == "soft BoN π_S":
            assert row["ideal FLOPs π_B"] == "0" and row["π_B generated tokens"] == "0"
        if row["method"] == "soft BoN π_B":
            assert row["ideal FLOPs π_S"] == "0" and row["π_B generated tokens"] != "0"


def test_runs_csv_holds_the_exact_numbers(sweep, report):
    rep, out = report
    rows = {r["path"]: r for r in read_csv(out / "runs.csv")}
    for path, s in summaries(sweep).items():
        r = rows[path]
        assert float(r["accuracy"]) == s["accuracy"]
        assert float(r["flops_total"]) == s["flops"]["total"]
        for role in ("small", "big", "reward"):
            assert float(r[f"flops_{role}"]) == s["flops"][role]
        assert float(r["wall_time_s"]) == s["wall_time_s"]
        assert float(r["step_loop_s"]) == s["measured"]["step_loop_s"] <= s["wall_time_s"]
        assert float(r["big_generated"]) == s["tokens"]["big"]["generated"]


def test_accuracy_vs_flops_plots_every_run(sweep, report):
    rep, out = report
    fig = rep["figures"]["accuracy_vs_flops"]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split(" (")[0] for ax in axes] == ["math500", "olympiad"]  # one panel per dataset
    for ax in axes:
        assert ax.get_xscale() == "log" and ax.get_ylabel() == "accuracy (%)" and "FLOPs" in ax.get_xlabel()
    # The drawn points (error-bar data lines) are exactly (total FLOPs, 100 * accuracy) of the runs.
    drawn = sorted((round(x, 3), round(y, 6)) for ax in axes for c in ax.containers
                   for x, y in c.lines[0].get_xydata())
    want = sorted((round(s["flops"]["total"], 3), round(100 * s["accuracy"], 6)) for s in summaries(sweep).values())
    assert drawn == want
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    # u and δ are in the legend: GSI runs that differ only in u are separate series.
    assert {"GSI (u = 0.5)", "GSI (u = 0.3)", "GSI (u = 0.75)", "RSD (δ = 0.6)", "soft BoN π_S", "soft BoN π_B",
            "β = 1", "β = 4", "Pareto frontier"} <= set(legend)
    # The sidecar CSV: the same points, and a frontier that no run beats.
    points = read_csv(out / "accuracy_vs_flops.csv")
    runs = [p for p in points if p["series"] != "Pareto frontier"]
    assert sorted((round(float(p["x"]), 3), round(float(p["y"]), 6)) for p in runs) == want
    for panel in ("math500", "olympiad"):
        front = [(float(p["x"]), float(p["y"])) for p in points if p["series"] == "Pareto frontier"
                 and p["panel"] == panel]
        mine = [(float(p["x"]), float(p["y"])) for p in runs if p["panel"] == panel]
        assert front and all(not (x2 <= x and y2 > y) for x, y in front for x2, y2 in mine)
        assert front == pareto_front(mine)


def test_acceptance_vs_threshold_plots_the_gsi_and_rsd_runs(sweep, report):
    """u (GSI, on the unbounded tilted reward) and δ (RSD, a probability) get their own panels, drawn only for a
    scale that was swept (here GSI's u: RSD ran at one δ); step-level and token-level acceptance are both drawn."""
    rep, out = report
    points = read_csv(out / "acceptance_vs_threshold.csv")
    for metric, key in (("acceptance_steps", "acceptance_rate"), ("acceptance_tokens", "acceptance_rate_tokens")):
        want = sorted((float(s["_method"]["threshold"]), round(100 * s[key], 6)) for s in summaries(sweep).values()
                      if s["_method"]["name"] == "gsi")
        assert sorted((float(p["x"]), round(float(p["y"]), 6)) for p in points if p["metric"] == metric) == want
    assert {p["series"].split(",")[0] for p in points} == {"GSI"}
    fig = rep["figures"]["acceptance_vs_threshold"]
    drawn = sorted((float(x), round(float(y), 6)) for ax in fig.axes for line in ax.lines
                   for x, y in line.get_xydata())
    assert drawn == sorted((float(p["x"]), round(float(p["y"]), 6)) for p in points)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {"math500: GSI (u)", "olympiad: GSI (u)"}
    for title, ax in panels.items():  # each panel holds one method only
        xs = {float(x) for line in ax.lines for x in line.get_xdata()}
        want = {p["x"] for p in points if p["panel"] == title.split(":")[0]
                and p["series"].startswith("GSI" if "GSI" in title else "RSD")}
        assert xs == {float(x) for x in want}
    # The threshold sweep is one line of three points per metric on the olympiad GSI panel.
    assert sorted(len(line.get_xdata()) for line in panels["olympiad: GSI (u)"].lines) == [3, 3]
    assert "draft tokens accepted" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_accuracy_vs_n(sweep, report):
    rep, out = report
    points = read_csv(out / "accuracy_vs_n.csv")
    want = sorted((s["_method"]["n"], round(100 * s["accuracy"], 6)) for s in summaries(sweep).values())
    assert sorted((int(p["n"]), round(float(p["y"]), 6)) for p in points) == want
    math500 = [ax for ax in rep["figures"]["accuracy_vs_n"].axes if ax.get_title() == "math500"][0]
    assert [t.get_text() for t in math500.get_xticklabels()] == ["1", "4"]
    assert len([line for line in math500.lines if len(line.get_xdata()) == 2]) == 8  # 4 methods x 2 beta


def test_pngs_are_images(report):
    rep, out = report
    names = {p.name for p in rep["files"]}
    assert {"report.md", "runs.csv", "configs.csv", "accuracy_vs_flops.png", "acceptance_vs_threshold.png",
            "accuracy_vs_n.png", "accuracy_vs_flops.csv", "acceptance_vs_threshold.csv", "accuracy_vs_n.csv",
            "accuracy_vs_flops.pdf", "acceptance_vs_threshold.pdf", "accuracy_vs_n.pdf"} <= names
    for name in ("accuracy_vs_flops", "acceptance_vs_threshold", "accuracy_vs_n"):
        img = mpimg.imread(out / f"{name}.png")
        assert img.shape[0] > 300 and img.shape[1] > 500 and img.std() > 0.05  # drawn, not blank
        assert f"({name}.png)" in (out / "report.md").read_text()
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"


def test_pareto_front():
    pts = [(1, 10), (2, 5), (3, 20), (3, 15), (5, 20), (8, 30)]
    assert pareto_front(pts) == [(1, 10), (3, 20), (8, 30)]


def test_markdown_escapes_pipes():
    text = markdown_table(["a", "b", "c", "d"], [["x|y", "1", "2", "3"]])
    assert "x\\|y" in text and text.count("\n") == 3


def test_cli_and_empty_input(tmp_path, sweep):
    out = tmp_path / "rep"
    cmd = [sys.executable, "-m", "experiments.report", str(sweep["root"] / "nested"), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "3 runs (3 configurations)" in proc.stdout
    _, rows = parse_markdown_table((out / "report.md").read_text())
    assert len(rows) == 3 and {r[5] for r in rows} == {"u = 0.3", "u = 0.6", "u = 0.75"}
    # Nothing to report: a report that says so, no figures, no crash.
    empty = tmp_path / "empty"
    empty.mkdir()
    rep = make_report([empty], tmp_path / "rep_empty")
    assert rep["runs"] == [] and all(f is None for f in rep["figures"].values())
    assert "_No runs with the needed values._" in (tmp_path / "rep_empty" / "report.md").read_text()


@pytest.mark.parametrize("preset,method,swept", [
    ("paper_gsi", "gsi", {"dataset", "method.n", "beta"}),
    ("paper_rsd", "rsd", {"dataset", "method.n", "beta"}),
    ("paper_bon_small", "bon", {"dataset", "method.n", "beta"}),
    ("paper_bon_big", "bon", {"dataset", "method.n", "beta"}),
    ("gsi_threshold", "gsi", {"dataset", "method.threshold"}),
    ("rsd_delta", "rsd", {"dataset", "method.delta"}),
    ("tiny_sweep", None, {"method", "method.n", "beta"}),
])
def test_experiment_presets_compose_with_their_sweeps(preset, method, swept):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from gsi.config.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={preset}"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert set(params) == swept
    if "dataset" in params:
        assert params["dataset"] == "math500,olympiad,minerva"
    if method is not None:
        assert cfg.method.name == method and cfg.model.name == "qwen25_math"
    resolved = OmegaConf.to_container(cfg.method, resolve=True)
    if preset == "paper_rsd":
        assert resolved["n_big"] == resolved["n"] and resolved["delta"] == 0.7
    if preset == "paper_bon_big":
        assert resolved["policy"] == "big" and resolved["selection"] == "soft"


@pytest.fixture(scope="module")
def thresholds(tmp_path_factory):
    """GSI with a tilted threshold sweep (u = 0.3, 0.7), the reference code's score threshold s = 2 at β = 4
    (u = s/β = 0.5), and a raw-r threshold, all at β = 4."""
    root = tmp_path_factory.mktemp("thr")
    runs = {"u03": ["method.threshold=0.3"], "u07": ["method.threshold=0.7"],
            "s2": ["method.threshold=2", "method.threshold_on=score"],
            "r05": ["method.threshold=0.5", "method.threshold_on=raw"]}
    for name, extra in runs.items():
        synthetic_run(["method=gsi", "method.n=2", "beta=4", *extra], root / name, n_problems=12)
    return root


def test_a_score_threshold_is_shown_and_plotted_as_u(thresholds, tmp_path):
    rep = make_report([thresholds], tmp_path / "r")
    by = {Path(r.path).name: r for r in rep["runs"]}
    assert by["s2"].threshold == 0.5 and by["s2"].threshold_axis == "u"
    assert by["s2"].label == "GSI (u = s/β = 0.5, s = 2)" and by["u03"].label == "GSI (u = 0.3)"
    assert by["r05"].threshold_axis == "r" and by["r05"].label == "GSI (raw r) (r = 0.5)"
    points = read_csv(tmp_path / "r" / "acceptance_vs_threshold.csv")
    panels = {ax.get_title(): ax for ax in rep["figures"]["acceptance_vs_threshold"].axes if ax.get_visible()}
    assert set(panels) == {"math500: GSI (u)"}  # raw r ran at one threshold: no curve, and never on the u axis
    xs = sorted({float(p["x"]) for p in points})
    assert xs == [0.3, 0.5, 0.7]  # the score run at u = 0.5, not at x = 2
    assert "u = s/β" in panels["math500: GSI (u)"].get_xlabel()
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| u = s/β = 0.5, s = 2 |" in md and "| r = 0.5 |" in md


def test_no_threshold_sweep_draws_no_acceptance_figure(thresholds, tmp_path):
    rep = make_report([thresholds / "u03", thresholds / "s2"], tmp_path / "r")  # two thresholds, two series
    assert rep["figures"]["acceptance_vs_threshold"] is not None
    rep = make_report([thresholds / "u03"], tmp_path / "one")
    assert rep["figures"]["acceptance_vs_threshold"] is None
    assert not (tmp_path / "one" / "acceptance_vs_threshold.png").exists()


def test_latex_table_and_the_big_tokens_figure(sweep, tmp_path):
    out = tmp_path / "tex"
    proc = subprocess.run([sys.executable, "-m", "experiments.report", str(sweep["root"] / "sweep_a"), "--out",
                           str(out), "--latex"], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tex = (out / "table.tex").read_text()
    assert tex in proc.stdout
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert str(sweep["root"]) not in tex and "/" not in tex.replace(r"\%", "").split(r"\midrule")[1].split(
        r"\bottomrule")[0]  # no paths in the rows
    rows = [line for line in tex.splitlines() if line.endswith(r"\\") and "&" in line][1:]
    assert any(row.startswith(r"soft BoN $\pi_S$ & math500") for row in rows)  # symbols as math, not "π\_S"
    assert len(rows) == 16
    configs = {(r["label"], r["n"], r["beta"]): r for r in read_csv(out / "configs.csv")}
    gsi = configs[("GSI (u = 0.5)", "4", "4.0")]
    acc = f"{100 * float(gsi['accuracy']):.1f} [{100 * float(gsi['ci_low']):.1f}, {100 * float(gsi['ci_high']):.1f}]"
    big = float(gsi["big_generated"]) / int(gsi["n_problems"])
    assert any(row.startswith("GSI & math500 & 4 & 4 & u = 0.5 & " + acc + f" & {big:,.0f}".replace(",", "{,}"))
               for row in rows), rows
    # Accuracy against pi_B's generated tokens per problem: every configuration, pi_S-only ones at 0.
    pts = [p for p in read_csv(out / "accuracy_vs_big_tokens.csv") if p["series"] != "Pareto frontier"]
    assert len(pts) == 16
    for p in pts:
        c = [c for c in configs.values() if p["series"].startswith(c["label"] + ",") and c["n"] == p["n"]
             and float(c["beta"]) == float(p["beta"])]
        assert len(c) == 1 and float(p["x"]) == pytest.approx(float(c[0]["big_generated"]) / 30)
    assert any(float(p["x"]) == 0 for p in pts if p["series"].startswith("soft BoN π_S"))


def test_equal_accuracies_get_a_readable_axis(tmp_path):
    """All-zero accuracies (and no interval): the y axis spans at least 10 points, not ±0.04 %."""
    from experiments.figures import plot_accuracy_vs_flops, plot_accuracy_vs_n
    from experiments.runs import Run

    runs = [Run(path=f"r{n}", method="bon", variant="soft BoN π_S", dataset="d", model="m", n=n, beta=1.0,
                threshold=None, n_problems=10, accuracy=0.0, ci_low=None, ci_high=None, acceptance_rate=None,
                acceptance_rate_tokens=None, flops_total=1e12 * n, flops={"small": 1e12 * n, "big": 0, "reward": 0},
                big_generated=0) for n in (1, 4)]
    for fig in (plot_accuracy_vs_flops(runs), plot_accuracy_vs_n(runs),
                plot_accuracy_vs_flops(runs, x="big_tokens")):
        lo, hi = fig.axes[0].get_ylim()
        assert hi - lo >= 10 and lo >= -2.0 and hi > 0


def test_identical_configurations_do_not_hide_each_other():
    """Beam search and DVTS at n = width give the same numbers: both markers stay visible, set apart."""
    from experiments.figures import plot_accuracy_vs_flops
    from experiments.runs import Run

    def run(variant, acc=0.5):
        return Run(path=variant, method="beam", variant=variant, dataset="d", model="m", n=4, beta=1.0,
                   threshold=None, n_problems=10, accuracy=acc, ci_low=0.2, ci_high=0.8, acceptance_rate=None,
                   acceptance_rate_tokens=None, flops_total=2e12, flops={"small": 2e12, "big": 0, "reward": 0})

    fig = plot_accuracy_vs_flops([run("beam search π_S (M=4, last)"), run("DVTS π_S (M=4, last)"),
                                  run("PF π_S (logit, hard)", acc=0.3)])
    ax = fig.axes[0]
    where = [tuple(c.lines[0].get_transform().transform(c.lines[0].get_xydata())[0]) for c in ax.containers]
    assert len(where) == 3 and len(set(where)) == 3
    assert where[0][1] == pytest.approx(where[1][1]) and abs(where[0][0] - where[1][0]) >= 4  # same y, apart in x
    assert "(identical points: set 5 pt apart)" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_accuracy_vs_n_keeps_many_series_close_to_their_n():
    """Fourteen series at n = 4 and 16: set apart so that their bars do not overlap, but all within ±2.5% of n
    (they were spread so far that they read as other n)."""
    from experiments.figures import plot_accuracy_vs_n
    from experiments.runs import Run

    runs = [Run(path=f"{i}-{n}", method="bon", variant=f"variant {i}", dataset="d", model="m", n=n, beta=1.0,
                threshold=None, n_problems=10, accuracy=0.05 * i, ci_low=0.0, ci_high=0.9, acceptance_rate=None,
                acceptance_rate_tokens=None, flops_total=1e12, flops={"small": 1e12, "big": 0, "reward": 0})
            for i in range(14) for n in (4, 16)]
    fig = plot_accuracy_vs_n(runs)
    xs = [x for line in fig.axes[0].lines for x in line.get_xdata()]
    assert len(xs) == 28 and len(set(xs)) == 28
    for x in xs:
        n = min((4, 16), key=lambda v: abs(v - x))
        assert abs(x / n - 1) <= 0.025


def test_a_resumed_run_reports_the_sum_of_its_sessions(tmp_path, monkeypatch):
    """A run stopped after 4 problems and resumed: summary.json's measured is the last session's (6 problems);
    gsi.rundir.sessions keeps both, and the report's step loop and executed FLOPs are their sums."""
    import experiments.synthetic as syn
    from experiments.runs import load_run

    real = syn.synthetic_grade
    calls = []

    def grade(text, reference, **how):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("node lost")
        return real(text, reference, **how)

    monkeypatch.setattr(syn, "synthetic_grade", grade)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="node lost"):
        synthetic_run(["method=gsi", "method.n=2"], out, n_problems=10)
    monkeypatch.setattr(syn, "synthetic_grade", real)
    summary = synthetic_run(["method=gsi", "method.n=2"], out, n_problems=10)
    lines = [json.loads(x) for x in (out / "sessions.jsonl").read_text().splitlines()]
    assert [x["problems_run"] for x in lines] == [4, 6]
    m = summary["measured"]
    assert m["problems_run"] == 6 and m["all_sessions"]["sessions"] == 2
    assert m["all_sessions"]["step_loop_s"] == pytest.approx(sum(x["step_loop_s"] for x in lines))
    run = load_run(out)
    assert run.step_loop_s == pytest.approx(sum(x["step_loop_s"] for x in lines))
    assert run.step_loop_s > m["step_loop_s"]
    assert run.flops_executed == pytest.approx(sum(sum(x["flops_executed"].values()) for x in lines))
    assert run.flops_executed > sum(m["flops_executed"].values())
