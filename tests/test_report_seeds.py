"""Publishable reports from a 3-seed synthetic sweep (table engines, seconds): seeds pooled into one point per
configuration with its spread (checked through the CSVs beside the figures), paired comparisons, --filter, shards,
tick labels, and tables that keep their width in logs."""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from experiments.compare import compare, mcnemar_exact  # noqa: E402
from experiments.plotting import flops_ticks  # noqa: E402
from experiments.report import make_report  # noqa: E402
from experiments.selection import parse_filters  # noqa: E402
from experiments.tables import print_table  # noqa: E402
from experiments.intervals import pooled_interval, problem_bootstrap, wilson  # noqa: E402
from experiments.synthetic import synthetic_run, synthetic_sweep  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """GSI and RSD (each its own sweep folder) x n in {1, 4} x seeds {0, 1, 2}, 30 problems; and a BoN run in two
    shards beside the same run unsharded."""
    root = tmp_path_factory.mktemp("seeds")
    sweeps = {}
    for name, method in (("gsi", ["method=gsi"]), ("rsd", ["method=rsd", "method.delta=0.6"])):
        sweeps[name] = synthetic_sweep(root / name, n_problems=30,
                                       sweep={"methods": [method], "n": [1, 4], "beta": [4.0], "seed": SEEDS})
    shard_dirs = [root / "shards" / f"s{i}" for i in range(2)]
    for i, d in enumerate(shard_dirs):
        synthetic_run(["dataset=olympiad", "method=bon", "method.n=4", "seed=1", f"shard={i}/2"], d, n_problems=30)
    whole = tmp_path_factory.mktemp("whole") / "run"
    synthetic_run(["dataset=olympiad", "method=bon", "method.n=4", "seed=1"], whole, n_problems=30)
    return {"root": root, "sweeps": sweeps, "shards": shard_dirs, "whole": whole}


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def summaries(dirs) -> list[dict]:
    out = []
    for d in dirs:
        s = json.loads((d / "summary.json").read_text())
        s["_exp"] = json.loads((d / "experiment.json").read_text())
        s["_dir"] = str(d)
        out.append(s)
    return out


def expected_configs(seeds) -> dict[tuple, list[dict]]:
    """(method, n) -> the three seeds' summaries."""
    groups: dict[tuple, list[dict]] = {}
    for dirs in seeds["sweeps"].values():
        for s in summaries(dirs):
            groups.setdefault((s["method"], s["_exp"]["method"]["n"]), []).append(s)
    return groups


@pytest.fixture(scope="module")
def report(seeds, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return make_report([seeds["root"] / "gsi", seeds["root"] / "rsd"], out), out


def test_three_seeds_give_one_point_per_configuration_with_its_spread(seeds, report):
    rep, out = report
    groups = expected_configs(seeds)
    assert len(rep["runs"]) == 12 and len(rep["configs"]) == 4
    for figure in ("accuracy_vs_flops", "accuracy_vs_n"):
        points = [p for p in read_csv(out / f"{figure}.csv") if p["series"] != "Pareto frontier"]
        assert len(points) == 4, figure  # one point per configuration, not one per seed
        for p in points:
            series = p["series"]
            method = "gsi" if series.startswith("GSI") else "rsd"
            runs = groups[(method, int(p["n"]))]
            accs = [s["accuracy"] for s in runs]
            assert sorted(s["seed"] for s in runs) == SEEDS and p["seeds"] == "0 1 2"
            mean = sum(accs) / 3
            # The interval is over the 30 problems (each with its 3 seeds), never narrower than one seed's Wilson
            # interval at that accuracy.
            w_lo, w_hi = wilson(mean, 30)
            per_seed = [{json.loads(line)["id"]: json.loads(line)["correct"]
                         for line in (Path(s["_dir"]) / "results.jsonl").read_text().splitlines()} for s in runs]
            _, b_lo, b_hi, n_problems = problem_bootstrap(per_seed)
            assert n_problems == 30
            assert float(p["y"]) == pytest.approx(100 * mean)
            assert float(p["y_low"]) == pytest.approx(100 * min(w_lo, b_lo))
            assert float(p["y_high"]) == pytest.approx(100 * max(w_hi, b_hi))
            assert float(p["y_high"]) - float(p["y_low"]) >= 100 * (w_hi - w_lo) - 1e-9
            assert float(p["y_std"] or 0) == pytest.approx(100 * statistics.stdev(accs))
            if figure == "accuracy_vs_flops":
                assert float(p["x"]) == pytest.approx(sum(s["flops"]["total"] for s in runs) / 3)
    # The seeds of a configuration differ (else the spread is not tested).
    assert any(len({s["accuracy"] for s in runs}) > 1 for runs in groups.values())
    configs = read_csv(out / "configs.csv")
    assert sorted(c["n_seeds"] for c in configs) == ["3"] * 4
    assert len(read_csv(out / "runs.csv")) == 12
    # The table: one row per configuration, seeds listed.
    md = (out / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| GSI") or line.startswith("| RSD")]
    assert len(rows) == 4 and all("| 0,1,2 |" in r for r in rows)


def test_filter_selects_runs(seeds, report, tmp_path):
    rep = make_report([seeds["root"] / "gsi", seeds["root"] / "rsd"], tmp_path / "f",
                      filters=["method=rsd", "method.n=4"])
    assert {(r.method, r.n) for r in rep["runs"]} == {("rsd", 4)} and len(rep["runs"]) == 3
    rep = make_report([seeds["root"] / "gsi"], tmp_path / "g", filters=["seed=0,2"])
    assert sorted(r.seed for r in rep["runs"]) == [0, 0, 2, 2]
    with pytest.raises(ValueError, match="no run has the key 'methd.n'"):
        make_report([seeds["root"] / "gsi"], tmp_path / "h", filters=["methd.n=4"])
    with pytest.raises(ValueError, match="key=value"):
        parse_filters(["method"])


def _correct(dirs) -> dict[tuple, bool]:
    out = {}
    for d in dirs:
        seed = json.loads((d / "experiment.json").read_text())["seed"]
        for line in (d / "results.jsonl").read_text().splitlines():
            rec = json.loads(line)
            out[(seed, rec["id"])] = rec["correct"]
    return out


def test_compare_is_a_paired_test_on_the_same_problems(seeds):
    gsi = [d for d in seeds["sweeps"]["gsi"] if "method.n=4" in d.name]
    rsd = [d for d in seeds["sweeps"]["rsd"] if "method.n=4" in d.name]
    a, b = _correct(gsi), _correct(rsd)
    assert set(a) == set(b) and len(a) == 90
    right_wrong = sum(a[k] and not b[k] for k in a)
    wrong_right = sum(b[k] and not a[k] for k in a)
    assert right_wrong + wrong_right > 0
    ids = {i for _, i in a}
    differ = sum(1 for i in ids if sum(a[(s, i)] for s in SEEDS) != sum(b[(s, i)] for s in SEEDS))
    c = compare([seeds["root"] / "gsi"], [seeds["root"] / "rsd"], parse_filters(["method.n=4"]), n_boot=2000)
    assert c["pairs"] == 90 and c["problems"] == 30 and c["seeds"] == SEEDS
    assert (c["A_right_B_wrong"], c["A_wrong_B_right"]) == (right_wrong, wrong_right)
    assert c["problems_that_differ"] == differ
    assert c["mcnemar_p"] == pytest.approx(stats.binomtest(right_wrong, right_wrong + wrong_right).pvalue)
    diff = (sum(a.values()) - sum(b.values())) / 90
    assert c["bootstrap"]["diff"] == pytest.approx(diff)
    assert c["bootstrap"]["ci"][0] <= diff <= c["bootstrap"]["ci"][1] and 0 <= c["bootstrap"]["p"] <= 1
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(10, 0) == pytest.approx(2 * 0.5 ** 10)

    # The command line prints the test; a side with several configurations is refused with the fix.
    cmd = [sys.executable, "-m", "experiments.report", "--compare", str(seeds["root"] / "gsi"),
           str(seeds["root"] / "rsd"), "--filter", "method.n=4", "--bootstrap", "500"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"problems that differ: {differ}" in proc.stdout
    p = float(re.search(r"McNemar exact test .*: p = ([\d.e-]+)", proc.stdout).group(1))
    assert p == pytest.approx(c["mcnemar_p"], rel=1e-3)
    assert "paired bootstrap over problems (500 resamples): A - B" in proc.stdout
    proc = subprocess.run(cmd[:-4], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "A holds 2 configurations" in proc.stderr and "--filter" in proc.stderr


def test_shards_are_merged_into_one_run_or_labelled(seeds, tmp_path):
    rep = make_report([seeds["root"] / "shards"], tmp_path / "s")
    (run,) = rep["runs"]
    whole = json.loads((seeds["whole"] / "summary.json").read_text())
    assert run.n_problems == 30 and run.shards is None
    assert run.accuracy == whole["accuracy"] and run.flops_total == pytest.approx(whole["flops"]["total"])
    rep = make_report([seeds["shards"][0]], tmp_path / "one")
    (run,) = rep["runs"]
    assert run.n_problems == 15 and run.shards == "0/2"
    assert "soft BoN π_S [shards 0/2]" in (tmp_path / "one" / "report.md").read_text()


def test_flops_tick_labels_are_exact_and_distinct(report):
    for lo, hi in [(1.1e12, 1.6e12), (1.05e12, 2.4e12), (7e12, 5.5e13), (6e12, 2e14), (9e11, 1.1e12)]:
        ticks, labels = flops_ticks(lo, hi)
        assert len(ticks) >= 2 and len(set(labels)) == len(labels), labels
        scale = {"G": 1e9, "T": 1e12}
        for t, label in zip(ticks, labels):  # the label says the tick's value
            assert float(label[:-1]) * scale[label[-1]] == pytest.approx(t)
    # "1T 1T 2T 2T" was what a sub-decade range gave.
    assert flops_ticks(1.1e12, 1.6e12)[1] == ["1.2T", "1.4T", "1.6T"]
    rep, out = report
    for ax in rep["figures"]["accuracy_vs_flops"].axes:
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert len(labels) >= 2 and len(set(labels)) == len(labels)


def test_tables_keep_their_width_outside_a_terminal(report):
    """Rich shrinks tables to 80 columns when stdout is not a terminal (a SLURM log): headers and values were cut."""
    from gsi.reporting.report import print_summary

    rep, out = report
    buf = io.StringIO()
    print_table(rep["configs"], file=buf)
    text = buf.getvalue()
    assert "acceptance % (tokens)" in text and "accuracy % [95% CI]" in text and "…" not in text
    assert max(len(line) for line in text.splitlines()) > 150
    summary = json.loads(Path(rep["runs"][0].path, "summary.json").read_text())
    buf = io.StringIO()
    print_summary(summary, file=buf)
    text = buf.getvalue()
    assert "acceptance (draft tokens)" in text and "prefilled (after cache)" in text and "…" not in text


def test_intervals_over_problems_are_never_narrower_than_one_seeds_wilson():
    """The issue's cases: two seeds at 0/3 gave [0, 0] (t over seed means); 17.5% and 30% on 40 problems gave
    [0, 100]. Over problems: 0/3 is one seed's Wilson [0, 56.1]; the other a usable interval."""
    zeros = [{"a": False, "b": False, "c": False}] * 2
    lo, hi, name = pooled_interval(0.0, 3, zeros)
    assert (round(100 * lo, 1), round(100 * hi, 1)) == (0.0, 56.1) and "bootstrap" in name
    assert wilson(0.0, 3) == pytest.approx(stats.binomtest(0, 3).proportion_ci(method="wilson"))
    assert wilson(7 / 40, 40) == pytest.approx(stats.binomtest(7, 40).proportion_ci(method="wilson"))
    s0 = {f"p{i}": i < 7 for i in range(40)}  # 17.5%
    s1 = {f"p{i}": i < 12 for i in range(40)}  # 30%: the same 7 plus 5 more
    lo, hi, _ = pooled_interval(0.2375, 40, [s0, s1])
    assert 0.10 < lo < 0.2375 < hi < 0.40
    assert hi - lo >= wilson(0.2375, 40)[1] - wilson(0.2375, 40)[0] - 1e-12
    # Without per-problem results (W&B): the Wilson interval over problems.
    assert pooled_interval(0.5, 10, None)[:2] == pytest.approx(wilson(0.5, 10))


def test_a_duplicated_seed_is_pooled_once_and_named(seeds, tmp_path, caplog):
    import shutil

    src = seeds["sweeps"]["gsi"][0]
    root = tmp_path / "dup"
    shutil.copytree(src, root / "a")
    shutil.copytree(src, root / "copy")  # the same seed again: a copied folder
    caplog.set_level("WARNING", logger="experiments.selection")
    rep = make_report([root], tmp_path / "r")
    (config,) = rep["configs"]
    assert config.seeds == [0] and config.n_seeds == 1
    assert "seed 0 appears twice" in caplog.text and str(root / "copy") in caplog.text
    assert (config.ci_low, config.ci_high) == pytest.approx(wilson(config.accuracy, config.n_problems))


def test_filter_by_the_printed_name_and_a_filter_that_matches_nothing(seeds, tmp_path):
    rep = make_report([seeds["root"] / "gsi", seeds["root"] / "rsd"], tmp_path / "a", filters=["method=GSI"])
    assert {r.method for r in rep["runs"]} == {"gsi"} and len(rep["runs"]) == 6
    with pytest.raises(ValueError, match=r"method=GSX matches none of the 12 runs; method is one of: .*GSI.*rsd"):
        make_report([seeds["root"] / "gsi", seeds["root"] / "rsd"], tmp_path / "b", filters=["method=GSX"])
    proc = subprocess.run([sys.executable, "-m", "experiments.report", str(seeds["root"] / "gsi"), "--out",
                           str(tmp_path / "c"), "--filter", "method.n=3"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "method.n=3 matches none" in proc.stderr


def test_compare_within_one_sweep_with_a_filter_per_side(seeds):
    both = seeds["root"]  # GSI and RSD under one folder: a filter each picks the side
    c = compare([both], [both], parse_filters(["method.n=4"]), n_boot=500, filters_a=parse_filters(["method=gsi"]),
                filters_b=parse_filters(["method=RSD"]))
    ref = compare([seeds["root"] / "gsi"], [seeds["root"] / "rsd"], parse_filters(["method.n=4"]), n_boot=500)
    for key in ("pairs", "problems", "A_right_B_wrong", "A_wrong_B_right", "mcnemar_p"):
        assert c[key] == ref[key], key
    assert c["A"]["label"].startswith("GSI") and c["B"]["label"].startswith("RSD")
