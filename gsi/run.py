"""Wires one run: problems in, engines up, the method stepped by the scheduler, results out. Nothing else."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gsi.rundir.lock import RunLock
from gsi.rundir.results import ResultsFile, parse_results, summarize, write_json
from gsi.reporting.utilisation import engine_delta
from gsi.config.validate import validate

log = logging.getLogger(__name__)

# Keys whose change makes earlier results in the same folder a different experiment.
# (trace: traced and untraced records in one results.jsonl would be one experiment with two record formats)
_IDENTITY_KEYS = ("model", "method", "dataset", "generation", "seed", "shard", "beta", "grader", "trace")


def output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not under @hydra.main
        return Path.cwd()


def check_same_experiment(out: Path, cfg: DictConfig, problems=None, data_sha256: str | None = None) -> None:
    """Refuse to resume into a folder that holds another experiment's results, or records of problems outside
    this run's selection (`problems`); the data's hash (gsi.data.benchmarks.data_sha256) is part of the identity. A folder
    that holds no results (a start that failed, e.g. on a mistyped model path) is taken over by this run."""
    ident = {k: OmegaConf.to_container(cfg[k], resolve=True, enum_to_str=True) if OmegaConf.is_config(cfg[k])
             else cfg[k] for k in _IDENTITY_KEYS if k in cfg}
    ident["dataset"].pop("data_dir", None)  # where the files are is not what they are
    ident["dataset"].pop("allow_empty", None)  # a permission, not a setting of the experiment
    if data_sha256 is not None:
        ident["data_sha256"] = data_sha256
    path = out / "experiment.json"
    results = out / "results.jsonl"
    records = parse_results(results.read_bytes())[0] if results.exists() else {}
    if problems is not None:
        selected = {p.id for p in problems}
        foreign = [i for i in records if i not in selected]
        if foreign:
            raise SystemExit(
                f"{results} holds {len(foreign)} record(s) of problems that this run did not select (ids "
                f"{', '.join(map(repr, foreign[:10]))}{', ...' if len(foreign) > 10 else ''}): another run's "
                "results, or another version of the data. They would be counted: remove those lines, or use "
                "another hydra.run.dir")
    if path.exists():
        try:
            old = json.loads(path.read_text())
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            if records:
                raise SystemExit(f"{path} is unreadable ({exc}) and {results} holds results: which experiment "
                                 "they belong to is unknown; restore experiment.json, or use another hydra.run.dir"
                                 ) from None
            old = {}
        # Provenance (gsi.rundir.provenance) says what produced the results, not which experiment they are.
        old = {k: v for k, v in old.items() if not k.startswith("provenance")}
        if "grader" not in old and "grader" in ident:  # written before runs had a grader: they used ours
            old["grader"] = {"name": "ours", "timeout": 5.0}
        old.setdefault("trace", False)  # written before trace was part of the identity: untraced records
        # written before the data's hash was part of the identity: the ids above are all that can be checked
        old.setdefault("data_sha256", ident.get("data_sha256"))
        diff = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k))
        if not diff:
            return
        if records:
            raise SystemExit(f"{out} holds results of a different experiment (differs in: {', '.join(diff)}); "
                             "use another hydra.run.dir")
        log.warning("%s holds no results: its experiment.json (another experiment, differing in: %s) is replaced "
                    "by this run's", out, ", ".join(diff))
    elif records:
        raise SystemExit(
            f"{results} holds results but {path} is missing, so which experiment they belong to is unknown "
            "(its config may differ from this one). To start afresh, move results.jsonl away (e.g. "
            f"mv {results} {results}.orphan); to continue it, restore its experiment.json; or use another "
            "hydra.run.dir")
    write_json(path, ident)


def run(cfg: DictConfig, out: Path | None = None, engines=None) -> dict:
    """Run (or resume) one experiment into `out`; returns the summary. `engines` lets tests pass their own (or a
    function that builds them, called where the registry's engines are built).

    The config is validated before anything is written; the folder is locked for the whole run (a second run on
    it exits at once, naming this one); a full disk ends with how many problems are saved."""
    validate(cfg)
    out = Path(out or output_dir())
    out.mkdir(parents=True, exist_ok=True)
    with disk_full_message(out), RunLock(out):
        return _run(cfg, out, engines)


@contextmanager
def disk_full_message(out: Path):
    """No space (or quota) left: say what is safe and what to do instead of a traceback. results.jsonl is fsynced
    per problem, so every complete line is saved; a half-written last line is dropped and redone on resume."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        path = out / "results.jsonl"
        try:
            saved = len(parse_results(path.read_bytes())[0])
        except OSError:
            saved = 0
        print(f"no space left on the disk of {out} ({exc.strerror}{': ' + str(exc.filename) if exc.filename else ''})"
              f": {saved} problems are saved in {path}. Free some space (or move the folder to a larger disk and "
              "point hydra.run.dir at it), then rerun the same command to resume", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def _run(cfg: DictConfig, out: Path, engines) -> dict:
    from tqdm import tqdm

    import grading
    from gsi.rundir import sessions
    from gsi.data.benchmarks import load_selection
    from gsi.methods import build_method
    from gsi.reporting.report import print_summary
    from gsi.runtime.scheduler import step_all
    from gsi.runtime.state import ProblemState
    from gsi.reporting.tracking import build_tracker
    from gsi.reporting.utilisation import utilisation, with_busy_fraction

    start = time.perf_counter()
    problems, data_sha256 = load_selection(cfg.dataset, shard=cfg.shard)  # a dataset error: nothing written yet
    check_same_experiment(out, cfg, problems, data_sha256)
    from gsi.rundir import provenance

    provenance.record(out, provenance.collect(cfg, problems))
    results = ResultsFile(out / "results.jsonl")
    done = results.load()
    todo = [p for p in problems if p.id not in done]
    if todo:
        from gsi.methods import method_class

        method_class(cfg.method.name).check_run(cfg.method, n_problems=len(todo), batch_size=cfg.batch_size)
    grader, grade_timeout = grader_of(cfg)
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
                from gsi.engines.registry import build_engines

                factory = lambda: build_engines(cfg)  # noqa: E731
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
                verdict = grading.grade(state.response_text, state.reference, timeout=grade_timeout, grader=grader)
                rec = make_record(state, verdict, seconds, method.has_acceptance, cfg.trace)
                rec["grader"] = grader
                if "pool" in state.scratch:  # every response of a response-level pool, graded (pool curves)
                    rec["pool"] = grade_pool(grading, state.scratch.pop("pool"), state.reference,
                                             timeout=grade_timeout, grader=grader)
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
        retry_timeouts(grading, results, done, grader=grader, timeout=grade_timeout)
        records = sorted(done.values(), key=lambda r: r["index"])
        params = engines.params if engines is not None else known_params(out, cfg)
        summary = summarize(records, flops_per_token={r: 2.0 * params.get(r, 0) for r in ("small", "big", "reward")},
                            has_acceptance=records[0]["acceptance"] if records else False)
        summary.update(method=cfg.method.name, dataset=cfg.dataset.name, model=cfg.model.name, seed=cfg.seed,
                       beta=cfg.beta, params=params, grader=grader)
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


def grader_of(cfg: DictConfig) -> tuple[str, float]:
    """The run's grader name (grading.graders) and its time limit per answer."""
    name = OmegaConf.select(cfg, "grader.name", default="ours")
    return str(getattr(name, "value", name)), float(OmegaConf.select(cfg, "grader.timeout", default=5.0))


class _StopRequested(Exception):
    """Raised between rounds once SIGINT/SIGTERM arrived: everything finished so far is saved."""


def under_submitit() -> bool:
    """submitit installs its own SIGTERM/SIGUSR2 handlers (preemption, requeue): leave SIGTERM to them."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR") or os.environ.get("SUBMITIT_FOLDER"))


class StopOnSignal:
    """SIGINT (Ctrl-C) and SIGTERM: let the current round finish (its finished problems are saved), then stop.
    A second signal stops at once (KeyboardInterrupt). Only in the main thread; under submitit SIGTERM is left
    to submitit's handler so that preemption and requeue keep working."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            sigs = [signal.SIGINT] + ([] if under_submitit() else [signal.SIGTERM])
            for sig in sigs:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s: finishing the current round, then stopping (send it again to stop now)",
                    signal.Signals(signum).name)
        self._watch_engines(signum)

    def _watch_engines(self, signum: int) -> None:
        """A Ctrl-C in a terminal (or SLURM's SIGTERM) reaches vLLM's engine processes too; they shut down and the
        engine call in flight would wait for them forever. If one of them ends, stop now (as a second signal)."""
        try:
            import psutil

            children = psutil.Process().children(recursive=True)
        except Exception:  # no psutil: no watch
            return
        engines = []
        for p in children:
            try:
                if "VLLM" in p.name() + " ".join(p.cmdline()):
                    engines.append(p)
            except psutil.Error:  # gone or a zombie meanwhile: not an engine to watch
                pass
        main = threading.main_thread().ident

        def watch():
            while self._old:
                for p in engines:
                    try:
                        dead = p.status() == psutil.STATUS_ZOMBIE
                    except psutil.Error:
                        dead = True
                    if dead:
                        signal.pthread_kill(main, signum)
                        return
                time.sleep(0.5)

        if engines:
            threading.Thread(target=watch, daemon=True, name="gsi-engine-watch").start()

    def guard(self, method):
        stop = self

        class Guarded:
            def __getattr__(self, name):
                return getattr(method, name)

            def step(self, live):
                if stop.signum is not None:
                    raise _StopRequested
                return method.step(live)

        return Guarded()


def failed_role(exc: BaseException, engines) -> str | None:
    """The role whose engine call raised `exc` (the deepest frame whose `self` is one of the role engines)."""
    roles = {id(e): r for r, e in engines.roles().items()}
    found, tb = None, exc.__traceback__
    while tb is not None:
        me = tb.tb_frame.f_locals.get("self")
        if me is not None and id(me) in roles:
            found = roles[id(me)]
        tb = tb.tb_next
    return found


def _slurm_terminating() -> bool:
    try:
        from gsi.cluster.slurm import terminating
    except ImportError:
        return False
    return bool(terminating())


def stopped(exc: BaseException, stop: StopOnSignal, engines, saved: int, total: int, path: Path) -> None:
    """Turn a signal or an engine failure in the step loop into a clear message and an exit status; anything
    else is re-raised unchanged by the caller."""
    where = f"{saved} of {total} problems saved in {path}; rerun the same command to resume"
    if stop.signum is None and _slurm_terminating():
        stop.signum = signal.SIGTERM  # SLURM is requeueing or preempting the job: not an engine failure
    if stop.signum is not None or isinstance(exc, (_StopRequested, KeyboardInterrupt)):
        # (a Ctrl-C in a terminal also reaches vLLM's engine processes, which shut down: their error counts as
        # the interruption)
        signum = stop.signum or signal.SIGINT
        msg = f"interrupted ({signal.Signals(signum).name}): {where}"
        print(msg, file=sys.stderr, flush=True)
        to_log_files(logging.WARNING, msg)
        raise SystemExit(128 + signum) from None
    role = failed_role(exc, engines) if isinstance(exc, Exception) else None
    if role is not None:
        traceback.print_exception(exc, file=sys.stderr)
        msg = f"the {role} engine failed ({type(exc).__name__}: {exc}); {where}"
        print(msg, file=sys.stderr, flush=True)
        to_log_files(logging.ERROR, msg, exc)
        raise SystemExit(1) from exc


def to_log_files(level: int, msg: str, exc: BaseException | None = None) -> None:
    """Also into the log files (Hydra's run.log), which the console prints above do not reach: a job's log must
    say why it ended (an engine that died, or was OOM-killed) without its stderr beside it."""
    record = log.makeRecord(log.name, level, __file__, 0, msg, None,
                            (type(exc), exc, exc.__traceback__) if exc is not None else None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
            handler.handle(record)


def initial_states(cfg: DictConfig, engines, problems, todo=None) -> list:
    """A fresh state per problem of `todo` (default: all), its prompt rendered for the shared tokenizer and its
    index the problem's place in the run (results keep that order)."""
    from gsi.data.prompts import render_prompt, system_prompt
    from gsi.runtime.state import ProblemState

    system = system_prompt(cfg.model.system_prompt, cfg.dataset.instruction)
    index = {p.id: i for i, p in enumerate(problems)}
    states = []
    for p in problems if todo is None else todo:
        prompt = render_prompt(engines.tokenizer, system, p.problem) if engines.tokenizer else [0]
        states.append(ProblemState(index=index[p.id], id=p.id, problem=p.problem, reference=p.reference,
                                   prompt_ids=prompt, context=list(prompt)))
    return states


def step_context(cfg: DictConfig, engines):
    from gsi.methods.base import StepContext

    window = min(r.max_model_len for r in engines.roles().values())
    return StepContext(seed=cfg.seed, max_step_tokens=cfg.generation.max_step_tokens,
                       max_steps=cfg.generation.max_steps, window=window, trace=cfg.trace,
                       delimiter=cfg.generation.step_delimiter)


def make_record(state, verdict, seconds: float, has_acceptance: bool, trace: bool) -> dict:
    roles = ("small", "big", "reward")
    rec = {
        "index": state.index,
        "id": state.id,
        "problem": state.problem,
        "reference": state.reference,
        "final_text": state.response_text,
        "extracted": verdict.extracted,
        "correct": bool(verdict.correct),
        "grade_rule": verdict.rule,
        "stop_reason": state.stop_reason,
        "steps": len(state.steps),
        "acceptance": has_acceptance,
        "accepted_steps": sum(bool(s.accepted) for s in state.steps) if has_acceptance else 0,
        "steps_by": {r: sum(s.source == r for s in state.steps) for r in ("small", "big")},
        # Draft tokens (methods with an accept test): of the drafts put to the test, of all n drafts, and of
        # the drafts that passed it.
        "chosen_draft_tokens": sum(s.chosen_draft_tokens for s in state.steps) if has_acceptance else 0,
        "drafted_tokens": sum(s.drafted_tokens for s in state.steps) if has_acceptance else 0,
        "accepted_draft_tokens": sum(len(s.token_ids) for s in state.steps if s.accepted) if has_acceptance else 0,
        "empty_candidates": state.empty_candidates,
        # With a prefix cache (each role reads the context once) and without (gsi.runtime.state).
        "tokens": {r: dict(state.tokens[r]) for r in roles},
        "tokens_nocache": {r: dict(state.tokens_nocache[r]) for r in roles},
        "time_s": seconds,
    }
    if trace:
        rec["trace"] = state.trace
    return rec


def grade_pool(grading, pool: list[dict], reference: str, **how) -> list[dict]:
    """Each pooled response with its grade (experiments/pool_curves.py votes and scores over them); `how`: the
    run's grader and timeout (a stand-in grading module without grade_many takes none)."""
    many = getattr(grading, "grade_many", None)
    pairs = [(r["text"], reference) for r in pool]
    verdicts = many(pairs, **how) if many else [grading.grade(t, ref) for t, ref in pairs]
    return [{**r, "extracted": v.extracted, "correct": bool(v.correct)} for r, v in zip(pool, verdicts)]


def retry_timeouts(grading, results: ResultsFile, done: dict, **how) -> None:
    """Grade each answer graded "timeout" once more, after the run's other grading (the engines idle now): the
    limit is the grading worker's CPU time, so this settles only answers that need about the limit, and makes
    their verdict not depend on what else ran beside the first try. The retry's verdict stands; the record says
    it was retried (`grade_retried`), so a resume does not retry it again. `how`: the run's grader and timeout."""
    redo = [r for r in done.values() if r.get("grade_rule") == "timeout" and not r.get("grade_retried")]
    if not redo:
        return
    for rec in redo:
        v = grading.grade(rec["final_text"], rec["reference"], **how)
        rec.update(correct=bool(v.correct), grade_rule=v.rule, extracted=v.extracted, grade_retried=True)
    log.info("graded %d answer(s) that timed out once more: %d correct now", len(redo),
             sum(r["correct"] for r in redo))
    results.rewrite(done.values())


def known_params(out: Path, cfg: DictConfig) -> dict:
    """Parameter counts when no engine was started (a resume with nothing left): from the earlier summary, else
    counted from the models' configs."""
    path = out / "summary.json"
    if path.exists():
        try:
            params = json.loads(path.read_text()).get("params")
        except (OSError, ValueError, AttributeError) as exc:  # truncated by a crash or a full disk
            log.warning("%s is unreadable (%s); recomputing it from %s", path, exc, out / "results.jsonl")
            params = None
        if params:
            return params
    from gsi.engines.registry import model_params, validate

    return model_params(cfg, validate(cfg, check_devices=False))


def measured(engines, params: dict, before: dict[str, dict] | None = None) -> dict:
    """What this process measured in this run: engine busy time, tokens actually prefilled after prefix-cache hits,
    and the FLOPs executed (cache hits not recomputed), counted from `before` (the engines' stats when the run
    began). A resumed run reports its own session only."""
    stats = engine_delta(engines.stats(), before)
    return {
        "engine": stats,
        "flops_executed": {r: 2.0 * params.get(r, 0) * (s["prefilled_tokens"] + s["generated_tokens"])
                           for r, s in stats.items()},
    }
