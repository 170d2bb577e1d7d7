"""Every rule a composed run config must satisfy that its types cannot express, checked in one pass before
anything is written or loaded.

The schemas in gsi/config/schema.py already refuse unknown keys, wrong types and values outside a fixed set (Enums);
this module adds the numeric and cross-field rules, so that a bad value fails in well under a second naming its
key, instead of deep inside numpy or an engine after the models loaded (and after experiment.json was written).
It imports only the standard library, OmegaConf, Hydra's callback base, gsi.data's registry, the PRM adapter
registry and the run-folder lock (all light: no torch, no vLLM, no datasets).

    validate(cfg)     # raises ConfigInvalid listing every broken rule, one line per key
    problems(cfg)     # the same list, without raising

run.py calls it from a Hydra callback when the run starts (before Hydra creates the run folder), again in the job
(sweeps), and gsi.run.run calls it first of all (tests, benches and scripts that skip the CLI).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from grading.lifetime import check_timeout
from gsi.config import schema as schema_module
from gsi.config.access import get
from gsi.config.schema import METHOD_SCHEMAS, Choice
from gsi.data import REGISTRY as DATASETS
from gsi.data import arith, parse_shard, select
from gsi.engines.rewards import ADAPTERS
from gsi.roles import ROLES
from gsi.rundir.lock import RunLock

# Bounds past which a value means nothing, whatever its type allows:
# - seeds reach numpy, vLLM, W&B and JSON readers: they must fit a signed 64-bit integer;
SEED_END = 2**63
# - beta scales rewards in 1 and log-ratios of a few hundred; past 1e6 soft selection is hard selection (use
#   method.selection=hard), and near 1e308 beta * r overflows to inf and every weight turns NaN;
MAX_BETA = 1e6
# - the engines divide the logits by the temperature: below 0.01 they overflow 16-bit floats (logits of ~30
#   over 1e-4 already pass 65504) and sampling is argmax in all but name (greedy: method.greedy=true);
MIN_TEMPERATURE = 0.01
# - a context window holds the chat-rendered prompt (the system prompt alone is dozens of tokens) and a step.
MIN_MODEL_LEN = 128

# What a method uses beta for, and so whether it must be > 0 (it must be finite everywhere: it is a sweep axis
# and is written into experiment.json and summary.json).
#  - gsi: the selection score beta*r + log pi_B/pi_S, and the tilted reward r + log(pi_B/pi_S)/beta divides by it.
#  - bon with soft selection: softmax(beta*r); beta < 0 silently prefers the lowest reward, beta = 0 ignores it.
#  - rsd with n > 1 or n_big > 1: soft best-of-n by softmax(beta*r), same reason.
# hard selection, voting and the baseline do not read beta.


class ConfigInvalid(ValueError):
    """A run config breaks one or more rules; the message names each key."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("invalid run config:\n  - " + "\n  - ".join(self.errors))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> float | None:
    try:
        return float(v) if not isinstance(v, bool) else None
    except (TypeError, ValueError):
        return None


def _int_at_least(errors: list[str], key: str, v: Any, low: int, why: str = "") -> None:
    if not _is_int(v) or v < low:
        errors.append(f"{key}={v!r}: must be an integer >= {low}{why}")


def _seed(errors: list[str], key: str, v: Any) -> None:
    if not _is_int(v) or not 0 <= v < SEED_END:
        errors.append(f"{key}={v!r}: must be an integer in [0, 2**63) (a signed 64-bit integer)")


def _beta(errors: list[str], key: str, v: Any) -> None:
    _finite(errors, key, v)
    x = _number(v)
    if x is not None and math.isfinite(x) and abs(x) > MAX_BETA:
        errors.append(f"{key}={v!r}: must be within +-{MAX_BETA:g} (beyond it soft selection is hard selection: "
                      "method.selection=hard; near 1e308 beta*r overflows)")


def _finite(errors: list[str], key: str, v: Any, *, positive: bool = False, why: str = "") -> None:
    x = _number(v)
    if x is None or not math.isfinite(x):
        errors.append(f"{key}={v!r}: must be a finite number{why}")
    elif positive and not x > 0:
        errors.append(f"{key}={v!r}: must be > 0{why}")


def problems(cfg: Any) -> list[str]:
    """Every rule `cfg` breaks, as 'key=value: what is wrong' lines (empty when the config is good)."""
    errors: list[str] = []
    _top(cfg, errors)
    _generation(get(cfg, "generation"), errors)
    _method(get(cfg, "method"), errors)
    _dataset(get(cfg, "dataset"), errors)
    _model(get(cfg, "model"), errors)
    _scheduler(cfg, errors)
    _grader(get(cfg, "grader"), errors)
    _selection(cfg, errors)
    return errors


def _grader(grader: Any, errors: list[str]) -> None:
    if grader is None:
        return
    t = get(grader, "timeout")
    try:
        if t is None:
            raise ValueError("must be a finite number of seconds (null would grade without any limit)")
        check_timeout(t)
    except ValueError as exc:
        errors.append(f"grader.timeout={t!r}: {str(exc).split(': ', 1)[-1]}")


def _selection(cfg: Any, errors: list[str]) -> None:
    """No problem selected is an error unless asked for (dataset.allow_empty=true): a run that grades nothing
    prints `accuracy: null` and exits 0, which reads as a finished experiment. Where the dataset's size is known
    from the config (dataset=arith) it is checked here; a file's or the hub's size, once loaded (gsi.data.selection)."""
    d = get(cfg, "dataset")
    if bool(get(d, "allow_empty", False)):
        return
    limit = get(d, "limit")
    if _is_int(limit) and limit == 0:
        errors.append("dataset.limit=0: selects no problem; give a limit >= 1, null for all problems, or "
                      "dataset.allow_empty=true if an empty run is meant")
        return
    if str(get(d, "name")) != "arith":
        return
    n, offset, shard = get(d, "n_problems"), get(d, "offset", 0), get(cfg, "shard")
    if not (_is_int(n) and n >= 1 and _is_int(offset) and offset >= 0 and (limit is None or _is_int(limit))):
        return  # their own errors say why
    try:
        chosen = select(range(n), offset=offset, limit=limit, shard=shard)
    except ValueError:
        return  # shard's own error
    if not chosen:
        what = f"dataset.offset={offset}" if offset >= n else f"shard={shard}"
        errors.append(f"{what}: selects no problem of dataset.n_problems={n} (offset {offset}, limit {limit}"
                      f"{f', shard {shard}' if shard else ''}); choose a selection that holds at least one, or "
                      "dataset.allow_empty=true if an empty run is meant")


def _scheduler(cfg: Any, errors: list[str]) -> None:
    sched = get(cfg, "scheduler")
    if sched is None:
        return
    if get(sched, "max_in_flight") is not None:
        _int_at_least(errors, "scheduler.max_in_flight", get(sched, "max_in_flight"), 1)


def validate(cfg: Any) -> None:
    errors = problems(cfg)
    if errors:
        raise ConfigInvalid(errors)


def _top(cfg: Any, errors: list[str]) -> None:
    _int_at_least(errors, "batch_size", get(cfg, "batch_size"), 1, " (problems advanced together per round)")
    _seed(errors, "seed", get(cfg, "seed"))
    _beta(errors, "beta", get(cfg, "beta"))
    shard = get(cfg, "shard")
    if shard is not None:
        try:
            parse_shard(shard)
        except ValueError:
            errors.append(f"shard={shard!r}: must be 'i/k' with 0 <= i < k (this job runs the i-th of k shares)")


def _generation(gen: Any, errors: list[str]) -> None:
    t = get(gen, "temperature")
    x = _number(t)
    if x is None or not math.isfinite(x) or not x >= MIN_TEMPERATURE:
        # Both policies sample and are scored at this temperature; greedy decoding is a method's choice.
        errors.append(f"generation.temperature={t!r}: must be a finite number >= {MIN_TEMPERATURE} (the logits are "
                      "divided by it; greedy decoding is method=baseline method.greedy=true)")
    _int_at_least(errors, "generation.max_steps", get(gen, "max_steps"), 1)
    _int_at_least(errors, "generation.max_step_tokens", get(gen, "max_step_tokens"), 1)
    if not get(gen, "step_delimiter"):
        errors.append("generation.step_delimiter: must not be empty (steps are split on it)")


def _beta_key(m: Any) -> str:
    """The key a user set beta with: the top-level `beta` unless method.beta was overridden itself."""
    if isinstance(m, DictConfig) and "beta" in m and OmegaConf.is_interpolation(m, "beta"):
        return "beta"
    return "method.beta"


def _choices(m: Any, name: str, errors: list[str]) -> None:
    """Each fixed-value option of the method's schema holds one of its values. Composition already refuses others
    (the schema's Enums); this catches configs built without the schema (plain dicts, OmegaConf.create)."""
    schema = METHOD_SCHEMAS.get(name)
    for f in dataclasses.fields(schema) if schema is not None else ():
        kind = f.type if isinstance(f.type, type) else getattr(schema_module, str(f.type), None)
        if isinstance(kind, type) and issubclass(kind, Choice):
            value = get(m, f.name)
            allowed = [c.value for c in kind]
            if value is not None and str(value) not in allowed:
                errors.append(f"method.{f.name}={value!r}: must be one of {', '.join(allowed)}")


def _method(m: Any, errors: list[str]) -> None:
    name = str(get(m, "name"))
    _choices(m, name, errors)
    _int_at_least(errors, "method.n", get(m, "n"), 1)
    beta, beta_key = get(m, "beta"), _beta_key(m)
    if beta_key == "method.beta":  # else the top-level check covers it
        _beta(errors, beta_key, beta)
    n, n_big = get(m, "n"), get(m, "n_big")
    # (gsi's n_big defaults to ${.n}: then method.n's error says it all; gsi without fallback never samples pi_B)
    n_big_own = not (isinstance(m, DictConfig) and "n_big" in m and OmegaConf.is_interpolation(m, "n_big"))
    if name in ("gsi", "rsd") and n_big_own and (name == "rsd" or bool(get(m, "fallback", True))):
        _int_at_least(errors, "method.n_big", n_big, 1, " (pi_B samples on rejection)")
    needs_beta = None
    if name == "gsi":
        needs_beta = " for gsi (the tilted reward r + log(pi_B/pi_S)/beta divides by it)"
        _finite(errors, "method.threshold", get(m, "threshold"))
    elif name == "rsd":
        _finite(errors, "method.delta", get(m, "delta"))
        _int_at_least(errors, "method.patience", get(m, "patience"), 0, " (0 turns it off)")
        if (_is_int(n) and n > 1) or (_is_int(n_big) and n_big > 1):
            needs_beta = " for rsd with n > 1 or n_big > 1 (soft best-of-n draws by softmax(beta r))"
            if bool(get(m, "greedy", False)):
                errors.append(f"method.greedy=true decodes one deterministic step: method.n={n} and "
                              f"method.n_big={n_big} would be copies of it; set both to 1")
    elif name in ("beam", "dvts"):
        width, lookahead = get(m, "width"), get(m, "lookahead")
        _int_at_least(errors, "method.width", width, 1)
        if _is_int(width) and width >= 1 and _is_int(n) and n >= 1 and (n < width or n % width):
            errors.append(f"method.n={n}: must be a positive multiple of method.width={width} (n / width beams "
                          "are kept)")
        _int_at_least(errors, "method.lookahead", lookahead, 0, " (greedy steps rolled out before scoring)")
        if str(get(m, "selection")) == "soft":
            needs_beta = " for soft selection (softmax(beta r): beta < 0 would prefer the lowest reward)"
    elif name == "pf":
        _finite(errors, "method.temperature", get(m, "temperature"), positive=True,
                why=" (a particle's log-weight is divided by it)")
    elif name == "bon":
        level, selection = str(get(m, "level")), str(get(m, "selection"))
        if level == "step" and selection not in ("soft", "hard"):
            errors.append(f"method.selection={selection}: voting needs whole responses (method.level=response)")
        if selection == "soft":
            needs_beta = " for soft selection (softmax(beta r): beta < 0 would prefer the lowest reward)"
    elif name == "baseline" and _is_int(n) and n != 1:
        errors.append(f"method.n={n}: the baseline draws one response per problem (for n of them use method=bon)")
    x = _number(beta)
    if needs_beta and x is not None and math.isfinite(x) and not x > 0:
        errors.append(f"{beta_key}={beta!r}: must be > 0{needs_beta}")


def _dataset(d: Any, errors: list[str]) -> None:
    name = get(d, "name")
    if name not in DATASETS:
        errors.append(f"dataset.name={name!r}: not a registered dataset ({', '.join(sorted(DATASETS))})")
    limit = get(d, "limit")
    if limit is not None:
        _int_at_least(errors, "dataset.limit", limit, 0, " or null (all problems)")
    _int_at_least(errors, "dataset.offset", get(d, "offset", 0), 0)
    if str(name) == "arith":
        _arith(d, errors)


def _arith(d: Any, errors: list[str]) -> None:
    """dataset=arith's generator settings (gsi/data/arith.py): rules here, so that they hold whatever the generator."""
    lo, hi = get(d, "min_ops"), get(d, "max_ops")
    # every value of a chain stays in LOW..HIGH and each operation moves it by at least 2
    most = (arith.HIGH - arith.LOW) // 2
    _int_at_least(errors, "dataset.min_ops", lo, 1)
    if not _is_int(hi) or not 1 <= hi <= most:
        errors.append(f"dataset.max_ops={hi!r}: must be an integer in [1, {most}] (a chain stays within "
                      f"{arith.LOW}..{arith.HIGH})")
    elif _is_int(lo) and lo > hi:
        errors.append(f"dataset.min_ops={lo}: must be <= dataset.max_ops={hi} (operations per problem are drawn "
                      "from [min_ops, max_ops])")
    _seed(errors, "dataset.seed", get(d, "seed"))
    n = get(d, "n_problems")
    if not _is_int(n) or n < 1:
        errors.append(f"dataset.n_problems={n!r}: must be an integer >= 1")
    elif _is_int(lo) and _is_int(hi) and 1 <= lo <= hi <= most:
        exist = arith.capacity(lo, hi)
        if n > exist:
            errors.append(f"dataset.n_problems={n}: only {exist} distinct held-out problems have {lo}..{hi} "
                          f"operations; ask for at most {exist} (or widen dataset.min_ops/max_ops)")


def _model(model: Any, errors: list[str]) -> None:
    adapter = str(get(model, "reward.adapter", "auto"))
    if adapter != "auto" and adapter not in ADAPTERS:
        errors.append(f"model.reward.adapter={adapter!r}: not a PRM adapter (auto, {', '.join(sorted(ADAPTERS))})")
    for role in ROLES:
        mml = get(model, f"{role}.max_model_len")
        if mml is not None:
            _int_at_least(errors, f"model.{role}.max_model_len", mml, MIN_MODEL_LEN,
                          " or null (the model's own window): it must hold the prompt and a step")


class ValidateOnRunStart(Callback):
    """Hydra callback (conf/config.yaml `hydra.callbacks`): in run mode Hydra calls on_run_start before it makes
    the run folder and writes .hydra/ into it, so a bad config leaves no folder behind. Sweeps: every job of the
    basic sweeper is checked before the first starts, and each job checks itself again in run.py."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        exit_if_invalid(config)
        # Valid: lock the run folder now, before Hydra writes .hydra/ into it (a second run on a busy folder must
        # not overwrite the running one's config); gsi.run.run takes the same lock again (re-entrant) and the
        # process's exit drops it.
        folder = make_run_dir(str(config.hydra.run.dir), "hydra.run.dir")
        self._lock = RunLock(folder)
        self._lock.acquire()

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if getattr(self, "_lock", None) is not None:
            self._lock.release()
            self._lock = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep with the basic sweeper: compose every job's config and check it before any job starts (or is
        submitted to SLURM). Other sweepers choose values as they go: their jobs check themselves in run.py."""
        jobs = _basic_sweep_jobs(config)
        bad = []
        for overrides, cfg in jobs or ():
            errors = problems(cfg)
            if errors:
                bad.append(f"job {' '.join(overrides) or '(no overrides)'}:\n    - " + "\n    - ".join(errors))
        if bad:
            print("invalid sweep, no job was started:\n  " + "\n  ".join(bad), file=sys.stderr, flush=True)
            raise SystemExit(2)


def _basic_sweep_jobs(config: DictConfig) -> list | None:
    """[(job overrides, composed config)] the way Hydra's BasicSweeper expands them; None when another sweeper
    runs the sweep or the expansion fails (each job is still checked when it starts)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return None
        loader = GlobalHydra.instance().config_loader()
        params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
        args = params + list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(args)
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        return [(job, loader.load_sweep_config(config, list(job))) for job in jobs]
    except Exception:  # noqa: BLE001 - Hydra internals moved: fall back to the per-job check
        return None


def make_run_dir(path: str, key: str):
    """mkdir -p `path`, or exit 2 naming `key` and what is in the way (a regular file where a folder must be, no
    permission) instead of a traceback."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except OSError as exc:
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
        why = (f"{blocker} is a file, not a folder" if blocker is not None
               else f"cannot create it ({exc.strerror or exc})")
        print(f"invalid run config:\n  - {key}={path}: {why}; give {key} a folder that can be created\n"
              "nothing was written or loaded; fix the key above and rerun", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def exit_if_invalid(cfg: Any) -> None:
    """validate(cfg), or print the error and exit 2 (no traceback: the message is the whole story)."""
    try:
        validate(cfg)
    except ConfigInvalid as exc:
        print(f"{exc}\nnothing was written or loaded; fix the keys above and rerun", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
