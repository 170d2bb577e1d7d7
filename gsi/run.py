"""Wires one run: problems in, engines up, the method stepped by the scheduler, results out. Nothing else.

The pieces it wires live beside: the experiment identity (gsi.rundir.identity), the record and the grading of
answers (gsi.rundir.records), how a run stops early (gsi.runtime.stopping), what it measured
(gsi.reporting.measured)."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

from gsi.config.validate import validate
from gsi.data import Problem, load_selection, select_problems
from gsi.data.prompts import render_prompt, system_prompt
from gsi.engines import registry
from gsi.methods import build_method, method_class
from gsi.methods.base import StepContext
from gsi.reporting.measured import known_params, measured
from gsi.reporting.report import print_summary
from gsi.reporting.tracking import build_tracker
from gsi.reporting.utilisation import engine_delta, utilisation, with_busy_fraction
from gsi.roles import ROLES
from gsi.rundir import provenance, sessions
from gsi.rundir.identity import check_same_experiment
from gsi.rundir.lock import RunLock
from gsi.rundir.records import AnswerGrader, Grader, grade_pool, make_record, retry_timeouts
from gsi.rundir.summary import run_summary
from gsi.rundir.results import ResultsFile, write_json
from gsi.runtime.scheduler import step_all
from gsi.runtime.state import ProblemState
from gsi.runtime.stopping import StopOnSignal, disk_full_message, stopped, to_log_files

log = logging.getLogger(__name__)


def output_dir() -> Path:
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not under @hydra.main
        return Path.cwd()


def run(cfg: DictConfig, out: Path | None = None, engines=None, problems: Sequence[Problem] | None = None,
        grader: AnswerGrader | None = None) -> dict:
    """Run (or resume) one experiment into `out`; returns the summary. `engines` lets tests pass their own (or a
    function that builds them, called where the registry's engines are built); `problems`, the dataset's problems
    (default: the dataset `cfg` names; the run selects offset/limit/shard from them either way); `grader`, what
    grades the answers (default: the configured grader, grading's rules; records name the configured one).

    The config is validated before anything is written; the folder is locked for the whole run (a second run on
    it exits at once, naming this one); a full disk ends with how many problems are saved."""
    validate(cfg)
    out = Path(out or output_dir())
    out.mkdir(parents=True, exist_ok=True)
    with disk_full_message(out), RunLock(out):
        return _run(cfg, out, engines, problems, grader)


def _run(cfg: DictConfig, out: Path, engines, dataset: Sequence[Problem] | None, grader: AnswerGrader | None) -> dict:
    start = time.perf_counter()
    # a dataset error: nothing written yet
    problems, data_sha256 = load_selection(cfg.dataset, shard=cfg.shard) if dataset is None else \
        select_problems(cfg.dataset, dataset, "the problems run() was given", shard=cfg.shard)
    check_same_experiment(out, cfg, problems, data_sha256)
    provenance.record(out, provenance.collect(cfg, problems))
    results = ResultsFile(out / "results.jsonl")
    done = results.load()
    todo = [p for p in problems if p.id not in done]
    if todo:
        method_class(cfg.method.name).check_run(cfg.method, n_problems=len(todo), batch_size=cfg.batch_size)
    configured = Grader.from_config(cfg)
    grader = grader or configured
    log.info("%d problems, %d already in %s, %d to run", len(problems), len(done), results.path, len(todo))

    tracker = build_tracker(cfg, out)
    factory = engines if callable(engines) else None  # tests: engines built here, as the registry's are
    engines = None if factory else engines
    own_engines = engines is None and bool(todo)
    loop_s = engine_start_s = None
    try:  # from here on every exit closes the tracker (an engine that fails to start ends its W&B run failed)
        if own_engines:
            if factory is None:
                # vLLM logs every engine step at INFO: keep the console for progress and results (users can
                # override).
                os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
                factory = lambda: registry.build_engines(cfg)  # noqa: E731
            engine_start = time.perf_counter()
            try:
                engines = factory()
            except BaseException as exc:
                msg = f"the engines failed to start ({type(exc).__name__}: {exc}); no problem of this session ran"
                print(msg, file=sys.stderr, flush=True)
                to_log_files(logging.ERROR, msg, exc)
                raise
            engine_start_s = time.perf_counter() - engine_start
        # Engines shared with earlier runs (tests, the toy demo) hold their calls too: this run reports the change.
        stats_before = engines.stats() if engines is not None else None
        if todo:
            states = initial_states(cfg, engines, problems, todo)
            ctx = step_context(cfg, engines)
            method = build_method(cfg.method, engines, ctx)
            bar = tqdm(total=len(problems), initial=len(done), desc=f"{cfg.method.name} {cfg.dataset.name}",
                       unit="problem", dynamic_ncols=True)
            tally = {"steps": 0, "accepted": 0, "correct": sum(bool(r["correct"]) for r in done.values())}

            def on_finish(state: ProblemState, seconds: float) -> None:
                verdict = grader.grade(state.response_text, state.reference)
                rec = make_record(state, verdict, seconds, method.has_acceptance, cfg.trace)
                rec["grader"] = configured.name
                if "pool" in state.scratch:  # every response of a response-level pool, graded (pool curves)
                    rec["pool"] = grade_pool(grader, state.scratch.pop("pool"), state.reference)
                results.append(rec)
                done[rec["id"]] = rec
                tally["steps"] += rec["steps"]
                tally["accepted"] += rec["accepted_steps"]
                tally["correct"] += rec["correct"]
                tracker.on_problem(rec, done_count=len(done), total=len(problems), tally=tally,
                                   engine_stats=with_busy_fraction(engine_delta(engines.stats(), stats_before),
                                                                   time.perf_counter() - loop_start),
                                   params=engines.params)
                bar.update(1)
                bar.set_postfix(acc=f"{tally['correct'] / len(done):.3f}",
                                accept=f"{tally['accepted'] / max(tally['steps'], 1):.2f}"
                                if method.has_acceptance else "-")

            loop_start, done_before = time.perf_counter(), len(done)

            def session_done() -> float:  # this session's step loop, kept across resumes (gsi.rundir.sessions)
                took = time.perf_counter() - loop_start
                sessions.record(out, step_loop_s=took, problems_run=len(done) - done_before,
                                engine_start_s=engine_start_s,
                                flops_executed=measured(engines, engines.params, stats_before)["flops_executed"])
                return took

            with StopOnSignal() as stop:
                try:
                    step_all(states, stop.guard(method), ctx, batch_size=cfg.batch_size, mode=cfg.scheduler.mode,
                             max_in_flight=cfg.scheduler.max_in_flight, on_finish=on_finish)
                except BaseException as exc:
                    bar.close()
                    try:
                        session_done()
                    except Exception as e:  # noqa: BLE001 - never hide why the loop stopped
                        log.warning("this session's measurements were not recorded (%s: %s)", type(e).__name__, e)
                    stopped(exc, stop, engines, len(done), len(problems), results.path)
                    raise
            bar.close()
            loop_s = session_done()
        retry_timeouts(grader, results, done)
        records = sorted(done.values(), key=lambda r: r["index"])
        params = engines.params if engines is not None else known_params(out, cfg)
        summary = run_summary(records, params, method=cfg.method.name, dataset=cfg.dataset.name, model=cfg.model.name,
                              seed=cfg.seed, beta=cfg.beta, grader=configured.name)
        summary["wall_time_s"] = time.perf_counter() - start
        summary["measured"] = measured(engines, params, stats_before) if engines is not None else {}
        # The step loop apart from engine start-up (this session's; None: nothing was left to run).
        # problems_run: how many of the run's problems this session ran (fewer on a resume: its step loop and
        # engine counters cover only those).
        summary["measured"].update(step_loop_s=loop_s, engine_start_s=engine_start_s, problems_run=len(todo),
                                   all_sessions=sessions.totals(out))
        summary["provenance"] = provenance.collect(cfg, problems)  # after the engines: hub commits are known now
        if todo and engines is not None:  # this session's step loop: each role's busy fraction of its wall time
            summary["measured"]["utilisation"] = utilisation(engines.stats(), loop_s, stats_before)
        write_json(out / "summary.json", summary)
        print_summary(summary, out)
        tracker.finish(summary, records)
        return summary
    except BaseException as exc:
        tracker.close(exc)  # the W&B run ends failed (or preempting), not finished
        raise
    finally:
        tracker.close()
        if own_engines and engines is not None:
            engines.close()


def initial_states(cfg: DictConfig, engines, problems, todo=None) -> list:
    """A fresh state per problem of `todo` (default: all), its prompt rendered for the shared tokenizer and its
    index the problem's place in the run (results keep that order)."""
    system = system_prompt(cfg.model.system_prompt, cfg.dataset.instruction)
    index = {p.id: i for i, p in enumerate(problems)}
    states = []
    for p in problems if todo is None else todo:
        prompt = render_prompt(engines.tokenizer, system, p.problem) if engines.tokenizer else [0]
        states.append(ProblemState(index=index[p.id], id=p.id, problem=p.problem, reference=p.reference,
                                   prompt_ids=prompt, context=list(prompt)))
    return states


def step_context(cfg: DictConfig, engines):
    window = min(r.max_model_len for r in engines.roles().values())
    return StepContext(seed=cfg.seed, max_step_tokens=cfg.generation.max_step_tokens,
                       max_steps=cfg.generation.max_steps, window=window, trace=cfg.trace,
                       delimiter=cfg.generation.step_delimiter)
