"""Typed structured configs, registered in Hydra's ConfigStore.

Every config group option in conf/ starts from one of these schemas (its defaults list names the schema), so a
misspelled key or a wrong type fails at composition, with Hydra naming the key, before anything heavy is
imported. This module imports nothing but the standard library, OmegaConf and Hydra.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import MISSING

# Our conf/hydra/launcher/submitit_slurm.yaml extends the plugin's preset of the same name on purpose.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/submitit_slurm' is validated against ConfigStore schema")


class Choice(str, Enum):
    """A fixed set of string values: a typo fails at composition (Hydra names the key and lists the values).
    Members are str, so methods keep comparing with plain strings (`cfg.policy == "small"`), JSON writes the
    value, and str()/f-strings give the value too (not `Policy.small`)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Dtype(Choice):  # what vLLM's `dtype` accepts
    auto = "auto"
    half = "half"
    float16 = "float16"
    bfloat16 = "bfloat16"
    float = "float"
    float32 = "float32"


class Policy(Choice):  # which policy a one-policy method samples from
    small = "small"
    big = "big"


class ThresholdOn(Choice):  # what GSI compares with its threshold
    tilted = "tilted"  # r + (log pi_B - log pi_S) / beta (the paper)
    raw = "raw"  # the PRM's r alone
    score = "score"  # the selection score beta r + log pi_B - log pi_S (the reference code's "s > 10")


class Selection(Choice):
    soft = "soft"  # draw by softmax(beta r)
    hard = "hard"  # argmax r
    majority = "majority"  # response level only: most frequent final answer
    weighted_majority = "weighted_majority"  # response level only: answer with the largest summed reward


class Level(Choice):
    step = "step"
    response = "response"


class Aggregate(Choice):  # a whole response's PRM score from its steps' rewards
    last = "last"
    min = "min"
    prod = "prod"


class Weighting(Choice):  # particle filtering's log-weight of a particle from its aggregated reward r
    logit = "logit"  # logit(r) / temperature (the paper)
    reward = "reward"  # r / temperature


class LoggerName(Choice):
    none = "none"
    wandb = "wandb"


@dataclass
class RoleModelConfig:
    # A hub id (Qwen/Qwen2.5-Math-7B-Instruct), a local folder, or tiny://<role> for the built-in tiny models.
    path: str = MISSING
    dtype: Dtype = Dtype.auto
    # None: the model's own context window.
    max_model_len: Optional[int] = None
    trust_remote_code: bool = False
    # Hub revision (commit, tag or branch) to pin a hub model to; None: the default branch (recorded as the
    # downloaded commit in the run's provenance).
    revision: Optional[str] = None


@dataclass
class RewardModelConfig(RoleModelConfig):
    # Which PRM adapter turns (problem, steps) into a score: auto (from the architecture), qwen_prm,
    # token_classification, skywork_prm, lm_verifier (a causal LM teacher-forcing the step; gsi.engines.rewards
    # names them all, gsi.config.validate refuses any other)
    adapter: str = "auto"
    # The system prompt the PRM was trained with (None: the adapter's default).
    system_prompt: Optional[str] = None


@dataclass
class ModelConfig:
    name: str = MISSING
    small: RoleModelConfig = field(default_factory=RoleModelConfig)
    big: RoleModelConfig = field(default_factory=RoleModelConfig)
    reward: RewardModelConfig = field(default_factory=RewardModelConfig)
    # Rendered with the model's chat template; the same context for all three roles.
    system_prompt: str = "Please reason step by step, and put your final answer within \\boxed{}."


class Placement(Choice):
    gpu3 = "gpu3"  # one GPU per role (big may span tensor_parallel_big GPUs)
    gpu1 = "gpu1"  # all three roles on one GPU, memory split by gpu_memory_utilization
    cpu = "cpu"  # vLLM's CPU build
    remote = "remote"  # every role on a vLLM server (hardware.remote: a URL per role; python -m gsi.cluster.serve)


# The runtime's policy (gsi/runtime/scheduler.py). `async` is a Python keyword, hence the functional form.
SchedulerMode = Choice("SchedulerMode", [
    ("async", "async"),  # problems advance as their own calls return; each role's waiting calls merged per call
    ("lockstep", "lockstep"),  # a step barrier over batch_size problems: the reference
    ("cohorts", "cohorts"),  # max_in_flight // batch_size cohorts with their own barrier (a benchmark row)
])


@dataclass
class HardwareConfig:
    name: str = MISSING
    placement: Placement = MISSING
    # GPUs the job has (CUDA_VISIBLE_DEVICES order); must fit the placement: gpu3 needs 2 + tensor_parallel_big.
    gpus: int = 0
    tensor_parallel_big: int = 1
    # Fraction of a GPU's memory each role's engine may take.
    gpu_memory_utilization: Dict[str, float] = field(
        default_factory=lambda: {"small": 0.9, "big": 0.9, "reward": 0.9})
    # GiB of KV cache per engine on the CPU (VLLM_CPU_KVCACHE_SPACE).
    cpu_kvcache_gb: float = 2.0
    enforce_eager: bool = False
    max_num_seqs: int = 256
    # Above any one batch's prompt tokens: seeded requests must not have their prefill split (vllm-facts §4).
    max_num_batched_tokens: int = 65536
    enable_prefix_caching: bool = True
    # Roles served by a vLLM server instead of an in-process engine: {role: URL} (gsi/engines/remote.py). Any
    # placement may name some roles here; placement=remote names all three.
    remote: Dict[str, str] = field(default_factory=dict)
    # Engine calls that run at once on a device two or more roles share (cpu; gpu1; gsi.engines.placement's
    # shared_devices): while one runs, every role's requests wait and merge into that role's next call.
    device_calls: int = 1
    # Launcher hints (SLURM): CPUs and memory per task.
    cpus_per_task: int = 8
    mem_gb: int = 64


@dataclass
class DatasetConfig:
    name: str = MISSING  # key in gsi.data's registry (gsi/data/registry.py)
    hub_path: str = MISSING
    hub_config: Optional[str] = None
    split: str = "test"
    # Hub revision (commit, tag or branch) of hub_path; None: the default branch.
    revision: Optional[str] = None
    # Local JSONL folder (tests and offline machines); null reads from the hub.
    data_dir: Optional[str] = "${oc.env:GSI_DATA_DIR,null}"
    local_file: str = MISSING
    limit: Optional[int] = None
    offset: int = 0
    # A selection of zero problems (limit 0, offset past the end, an empty shard) is refused unless this is true.
    allow_empty: bool = False
    # Appended to the system prompt for datasets that need an answer-format instruction (Minerva).
    instruction: Optional[str] = None


@dataclass
class ArithDatasetConfig(DatasetConfig):
    """dataset=arith (gsi/data/arith.py): held-out problems generated from `seed`, never among the toy models'
    training problems."""

    hub_path: str = ""
    local_file: str = ""
    n_problems: int = 500
    min_ops: int = 2  # difficulty: operations per problem, uniform in [min_ops, max_ops]
    max_ops: int = 6
    seed: int = 0


@dataclass
class GenerationConfig:
    temperature: float = 0.7  # both models sample, and are scored, at this temperature
    step_delimiter: str = "\n\n"
    max_step_tokens: int = 512
    max_steps: int = 45


@dataclass
class MethodConfig:
    name: str = MISSING
    n: int = 16
    beta: float = "${beta}"  # type: ignore[assignment]  # the top-level beta, so `beta=0.5,1,2` sweeps
    # The reward of an empty candidate (no text but the step delimiter, or EOS at once), without a PRM call: the
    # PRM would drop the empty step and score the last accepted one again.
    empty_reward: float = 0.0


@dataclass
class GSIConfig(MethodConfig):
    name: str = "gsi"
    n_big: int = "${.n}"  # type: ignore[assignment]
    threshold: float = 0.5
    # What is compared with the threshold: the tilted reward r~ = r + (log pi_B - log pi_S)/beta (`tilted`, the
    # paper), the score s = beta * r~ (`score`, the reference code's `s > 10`), or the raw reward r (`raw`).
    threshold_on: ThresholdOn = ThresholdOn.tilted
    # Fall back to pi_B on rejection (false: importance-weighted soft best-of-n from pi_S only).
    fallback: bool = True


@dataclass
class RSDConfig(MethodConfig):
    name: str = "rsd"
    n: int = 1  # drafts per step; n > 1 picks one by softmax(beta * r) first
    delta: float = 0.7
    n_big: int = 1  # pi_B samples on rejection; > 1 is soft best-of-n
    # Greedy draft and target steps (the RSD paper); needs n = n_big = 1.
    greedy: bool = False
    # Reproduce the RSD code's run-global patience: after patience - 1 rounds in a row in which no problem of the
    # run finished, every unfinished problem takes one more step and ends. 0 turns it off. Needs batch_size >= the
    # number of problems.
    patience: int = 0


@dataclass
class BoNConfig(MethodConfig):
    name: str = "bon"
    policy: Policy = Policy.small
    selection: Selection = Selection.soft
    level: Level = Level.step
    aggregate: Aggregate = Aggregate.last  # response-level PRM aggregation


@dataclass
class BaselineConfig(MethodConfig):
    name: str = "baseline"
    n: int = 1
    policy: Policy = Policy.small
    greedy: bool = False


class GraderName(Choice):
    ours = "ours"  # math-verify + our rules (grading/)
    prm800k = "prm800k"  # the PRM800K grader's rules (the GSI reference code's)
    qwen = "qwen"  # the Qwen2.5-Math evaluation's math_equal (the RSD code's)


@dataclass
class GraderConfig:
    # Which rules decide correctness (grading.graders); recorded in experiment.json, summary.json, results.jsonl.
    name: GraderName = GraderName.ours
    timeout: float = 5.0  # seconds per answer (in a worker process); a timeout counts as wrong


@dataclass
class BeamConfig(MethodConfig):
    name: str = "beam"
    n: int = 16  # N: candidates per round; N / width beams are kept
    width: int = 4  # M: next steps each kept beam proposes (N must be a multiple)
    policy: Policy = Policy.small
    aggregate: Aggregate = Aggregate.last  # a beam's score from its step rewards
    selection: Selection = Selection.hard  # the answer from the finished beams
    lookahead: int = 0  # greedy steps rolled out before the PRM scores a candidate


@dataclass
class DVTSConfig(BeamConfig):
    name: str = "dvts"  # N / width independent subtrees, each keeping its best of `width` candidates


@dataclass
class PFConfig(MethodConfig):
    name: str = "pf"
    n: int = 16  # particles
    policy: Policy = Policy.small
    weighting: Weighting = Weighting.logit
    temperature: float = 1.0
    aggregate: Aggregate = Aggregate.last  # r from a particle's step rewards (the paper: last)
    selection: Selection = Selection.hard  # hard: largest weight; soft: drawn by weight; or a vote


@dataclass
class LoggerConfig:
    name: LoggerName = LoggerName.none
    project: str = "gsi"
    entity: Optional[str] = None
    mode: str = "${oc.env:WANDB_MODE,online}"
    tags: List[str] = field(default_factory=list)


@dataclass
class SchedulerConfig:
    # async on every hardware; lockstep is the reference (tests, benchmarks), cohorts the former overlap (a row).
    mode: SchedulerMode = SchedulerMode["async"]
    # Problems in flight (`async`; `cohorts`: max_in_flight // batch_size cohorts of batch_size); null: batch_size,
    # sized to the engines' batch.
    max_in_flight: Optional[int] = None


@dataclass
class Config:
    model: ModelConfig = MISSING
    method: Any = MISSING  # one of the MethodConfig subclasses, chosen by the `method` group
    dataset: DatasetConfig = MISSING
    hardware: HardwareConfig = MISSING
    logger: LoggerConfig = MISSING
    grader: GraderConfig = MISSING
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    beta: float = 20.0
    seed: int = 0
    # "i/k": this job runs the i-th of k disjoint shards of the selected problems.
    shard: Optional[str] = None
    # Record every step's candidates, rewards, log-probs and selection probabilities in results.jsonl.
    trace: bool = False
    # Problems advanced together per round (one engine call per role per round).
    batch_size: int = 64
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)


METHOD_SCHEMAS = {"gsi": GSIConfig, "rsd": RSDConfig, "bon": BoNConfig, "baseline": BaselineConfig,
                  "beam": BeamConfig, "dvts": DVTSConfig, "pf": PFConfig}


def compose_config(*overrides: str):
    """The run config as `python run.py <overrides>` composes it (Hydra's compose API, no Hydra runtime: nothing
    under `hydra.` is resolved). For tests, benchmarks and scripts that drive gsi.run without the CLI."""
    register_configs()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    # Schemas live in their own groups (schema/<group>), so they are not offered as options of the real groups;
    # each option's defaults list pulls its schema in with `- /schema/<group>@_here_: <name>`.
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/hardware", name="hardware", node=HardwareConfig)
    cs.store(group="schema/dataset", name="dataset", node=DatasetConfig)
    cs.store(group="schema/dataset", name="arith", node=ArithDatasetConfig)
    cs.store(group="schema/logger", name="logger", node=LoggerConfig)
    cs.store(group="schema/grader", name="grader", node=GraderConfig)
    for name, schema in METHOD_SCHEMAS.items():
        cs.store(group="schema/method", name=name, node=schema)
