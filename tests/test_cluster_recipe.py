"""docs/cluster-recipe.md: every command in it is composed (sweeps expanded and their first job resolved with its
SLURM request, as `python -m gsi.cluster.preview` does), so the recipe cannot drift from the configs. A command of a kind
this test does not know fails it: a new step needs its check here."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gsi.cluster.preview import expand, job_config

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "docs" / "cluster-recipe.md"
SHELL = {"mkdir", "wandb", "."}  # plain shell steps: nothing of ours to compose


def commands() -> list[list[str]]:
    """Each command of the recipe's bash blocks, as argv: continuation lines joined, `for x in a b; do ... done`
    expanded, `nohup`, redirections and a trailing `&` removed."""
    blocks = re.findall(r"```bash\n(.*?)```", RECIPE.read_text(), flags=re.S)
    out = []
    for block in blocks:
        lines = block.replace("\\\n", " ").splitlines()
        i = 0
        while i < len(lines):
            line = lines[i].strip()
            loop = re.fullmatch(r"for (\w+) in (.+); do", line)
            if loop:
                body = []
                i += 1
                while lines[i].strip() != "done":
                    body.append(lines[i].strip())
                    i += 1
                for value in loop.group(2).split():
                    out += [_argv(b.replace(f"${loop.group(1)}", value)) for b in body]
            elif line:
                out.append(_argv(line))
            i += 1
    return out


def _argv(line: str) -> list[str]:
    argv = shlex.split(line.split(" > ")[0].rstrip("& "))
    return argv[1:] if argv[0] == "nohup" else argv


def _model_paths(name: str) -> set[str]:
    cfg = OmegaConf.load(REPO / "conf" / "model" / f"{name}.yaml")
    return {cfg[r].path for r in ("small", "big", "reward")}


def _check_sweep(overrides: list[str]) -> tuple[int, dict]:
    """(job count, first job) of a sweep; the first job is resolved with its launcher."""
    jobs = expand(overrides)
    first = job_config(jobs[0])
    assert "<unresolved" not in str(first["launcher"]), first["launcher"]
    return len(jobs), first


def test_every_command_of_the_recipe_composes():
    cmds = commands()
    assert len(cmds) >= 15
    downloads, submitted, previewed, reports = set(), {}, [], []
    env = {}
    for argv in cmds:
        if argv[:2] == ["python", "-m"] and argv[2] == "venv" or argv[0] in SHELL:
            continue
        if argv[0] == "pip":
            extra = re.fullmatch(r"\.\[(\w+)\]", argv[-1]).group(1)
            assert argv[:3] == ["pip", "install", "-e"]
            assert extra in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        elif argv[0] == "export":
            env.update(a.split("=", 1) for a in argv[1:])
        elif argv[0] == "huggingface-cli":
            assert argv[1] == "download"
            kind = "dataset" if "--repo-type" in argv else "model"
            downloads.add((kind, argv[-1]))
        elif argv[:3] == ["python", "-m", "gsi.cluster.preview"]:
            args = [a for a in argv[3:] if a != "--job" and not a.isdigit()]
            n, first = _check_sweep(args)
            if "--job" in argv:
                assert int(argv[argv.index("--job") + 1]) < n
            previewed.append((args, n, first))
        elif argv[:2] == ["python", "run.py"]:
            assert argv[2] == "-m" and "hydra/launcher=submitit_slurm" in argv, argv
            n, first = _check_sweep(argv[3:])
            assert first["launcher"]["launcher"] == "SlurmLauncher"
            sweep_dir = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.sweep.dir=")]
            assert sweep_dir and first["sweep_dir"] == sweep_dir[0]
            submitted.setdefault(sweep_dir[0], []).append(n)
        elif argv[:3] == ["python", "-m", "experiments.report"]:
            from experiments.report import build_parser
            from experiments.selection import parse_filters

            args = build_parser().parse_args(argv[3:])
            parse_filters(args.filter + args.filter_a + args.filter_b)
            reports.append(args)
        else:
            pytest.fail(f"docs/cluster-recipe.md: no check for the command {' '.join(argv)!r}")

    # The weights and data are exactly what the paper presets load.
    assert {p for k, p in downloads if k == "model"} == _model_paths("qwen25_math")
    preset = OmegaConf.load(REPO / "conf" / "experiment" / "paper_gsi.yaml")
    datasets = str(preset.hydra.sweeper.params.dataset).split(",")
    hub = {OmegaConf.load(REPO / "conf" / "dataset" / f"{d}.yaml").hub_path for d in datasets}
    assert {p for k, p in downloads if k == "dataset"} == hub
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_DATASETS_OFFLINE"] == "1" and "HF_HOME" in env

    # The preview: 36 jobs of 3 GPUs each, the threshold written on the u scale.
    args, n, first = previewed[0]
    assert n == 36 and first["launcher"]["gpus_per_node"] == 3 and first["config"]["hardware"] == "gpu3"
    assert first["config"]["threshold"].startswith("u = s/β = ")

    # Four presets, 144 jobs, each in its own sweep folder; the resume command reuses one of those folders.
    first_runs = {d: ns[0] for d, ns in submitted.items()}
    assert sorted(Path(d).name for d in first_runs) == ["paper_bon_big", "paper_bon_small", "paper_gsi", "paper_rsd"]
    assert sum(first_runs.values()) == 144
    assert any(len(ns) == 2 for ns in submitted.values())  # step 6: the same command, the same folder

    # The report reads the folder the sweeps write to.
    assert any(r.latex and r.paths and str(r.paths[0]) == "outputs/sweeps/paper" for r in reports)
    assert any(r.compare for r in reports) and any(r.filter_a and r.filter_b for r in reports)
