"""Where the three engines run (`hardware.placement`): the devices each role gets, the checks that the placement fits
the config and the machine, and the process settings the engines read at start.

- `cpu`: vLLM-CPU, `kv_cache_memory_bytes = hardware.cpu_kvcache_gb` GiB per engine (what VLLM_CPU_KVCACHE_SPACE
  sets, but per engine and fractional; a VLLM_CPU_KVCACHE_SPACE in the environment would override all three
  and is removed), OpenMP thread binding off (`VLLM_CPU_OMP_THREADS_BIND=nobind` unless set: the default "auto"
  pins every engine's worker to the same core 0, which made the parallel start of the three 2.3x slower, 57 s
  against 25 s on 2 cores), and OpenMP threads that wait passively (`OMP_WAIT_POLICY=PASSIVE` unless set).
- `gpu3`: one GPU per role via vLLM's `device_ids` (small 0, big 1..tp, reward tp+1, as indices into
  CUDA_VISIBLE_DEVICES), so no process-global CUDA_VISIBLE_DEVICES is touched and the three start in parallel.
  A vLLM without `device_ids` falls back to setting CUDA_VISIBLE_DEVICES around each engine, one at a time
  (the engine-core process inherits the environment when it is spawned). Not yet run on GPUs.
- `gpu1`: all three on GPU 0 with `hardware.gpu_memory_utilization[role]`. Started one after another: vLLM
  sizes its KV cache from the free-memory drop during its own profiling run, which another engine starting at
  the same time on the same GPU would corrupt.
- `remote`: every role on a vLLM server (`hardware.remote`: role -> URL; gsi.engines.remote). Any other placement
  may still name some roles there.

Opt-in on the CPU, `GSI_VLLM_INPROCESS=1`: every engine core and worker runs inside this process
(VLLM_ENABLE_V1_MULTIPROCESSING=0), started one after another (gsi.engines.launch).
"""

from __future__ import annotations

import logging
import os
from collections import Counter

from gsi.roles import ROLES
from gsi.config.access import get as _get

log = logging.getLogger(__name__)


def placement_name(hw) -> str:
    p = _get(hw, "placement")
    return str(getattr(p, "value", p))


def memory_fractions(hw) -> dict[str, float]:
    frac = _get(hw, "gpu_memory_utilization") or {}
    return {k: float(frac[k]) for k in frac}


def visible_cuda_devices() -> int | None:
    """GPUs this process can use, or None when there is no way to tell (no NVML, no torch)."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    listed = None
    if cvd is not None:
        entries = [e for e in cvd.split(",") if e.strip()]
        listed = 0 if not entries or entries[0].strip() == "-1" else len(entries)
    count = None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML: fall back to torch
        try:
            import torch

            count = int(torch.cuda.device_count()) if torch.version.cuda else 0
        except Exception:  # noqa: BLE001
            count = None
    if count is None:
        return listed
    return count if listed is None else min(count, listed)


def placement_devices(hw) -> dict[str, list[int]]:
    """GPU indices (into CUDA_VISIBLE_DEVICES) per role; {} for the CPU."""
    placement = placement_name(hw)
    tp = int(_get(hw, "tensor_parallel_big", 1))
    if placement == "gpu3":
        return {"small": [0], "big": list(range(1, 1 + tp)), "reward": [1 + tp]}
    if placement == "gpu1":
        return {"small": [0], "big": [0], "reward": [0]}
    return {}


def shared_devices(hw) -> dict[str, str]:
    """{role: device} for the in-process roles that share their device with another role: every one on the CPU
    (the engines share its cores), every one on gpu1, none on gpu3 (a GPU per role) nor for a remote role (its
    server's device is its own). The runtime runs at most `hardware.device_calls` engine calls at once on such a
    device (gsi.runtime.scheduler): concurrent calls there add no compute, only smaller calls that slow each other
    (docs/benchmarks.md, "On the CPU")."""
    remote = remote_roles(hw)
    if placement_name(hw) == "cpu":
        device = {r: "cpu" for r in ROLES}
    else:
        device = {r: f"cuda:{min(d)}" for r, d in placement_devices(hw).items()}
    device = {r: d for r, d in device.items() if r not in remote}
    count = Counter(device.values())
    return {r: d for r, d in device.items() if count[d] > 1}


def remote_roles(hw) -> dict[str, str]:
    """{role: URL} of the roles served by vLLM servers (hardware.remote)."""
    return {str(k): str(v) for k, v in (_get(hw, "remote") or {}).items() if v}


def _check_remote(hw, errors: list[str]) -> None:
    urls = remote_roles(hw)
    unknown = sorted(set(urls) - set(ROLES))
    if unknown:
        errors.append(f"hardware.remote names unknown roles {unknown}; roles are {list(ROLES)}")
    bad = {r: u for r, u in urls.items() if not u.startswith(("http://", "https://"))}
    if bad:
        errors.append(f"hardware.remote {bad}: a role's URL must start with http:// or https://")
    if placement_name(hw) == "remote":
        missing = [r for r in ROLES if r not in urls]
        if missing:
            errors.append(f"hardware.placement=remote needs a URL per role: hardware.remote lacks {missing} "
                          "(start them with python -m gsi.cluster.serve role=<role> ...)")


def check_hardware(hw, errors: list[str], *, check_devices: bool) -> None:
    """Append to `errors` what does not fit: the placement against the config, and (`check_devices`) against the
    GPUs this process really sees."""
    _check_remote(hw, errors)
    placement = placement_name(hw)
    if placement == "remote":
        return
    gpus = int(_get(hw, "gpus", 0) or 0)
    tp = int(_get(hw, "tensor_parallel_big", 1) or 1)
    frac = memory_fractions(hw)
    if placement not in ("gpu3", "gpu1", "cpu"):
        errors.append(f"hardware.placement={placement!r}: expected gpu3, gpu1, cpu or remote")
        return
    if tp < 1:
        errors.append(f"hardware.tensor_parallel_big={tp} must be >= 1")
        return
    if placement == "gpu3":
        need = 2 + tp
        if gpus < need:
            errors.append(f"hardware.gpus={gpus} does not fit placement gpu3: small, reward and big "
                          f"(hardware.tensor_parallel_big={tp}) need {need} GPUs")
    elif placement == "gpu1":
        if gpus < 1:
            errors.append(f"hardware.gpus={gpus} does not fit placement gpu1: it needs 1 GPU")
        if tp != 1:
            errors.append(f"hardware.tensor_parallel_big={tp}: placement gpu1 puts every role on one GPU, so it "
                          "must be 1")
    else:
        if gpus != 0:
            errors.append(f"hardware.gpus={gpus} does not fit placement cpu: the CPU build uses no GPU (set 0)")
        if tp != 1:
            errors.append(f"hardware.tensor_parallel_big={tp}: the CPU placement has no tensor parallelism")
    if placement in ("gpu3", "gpu1"):
        missing = [r for r in ROLES if r not in frac]
        if missing:
            errors.append(f"hardware.gpu_memory_utilization lacks {missing}")
        bad = {r: v for r, v in frac.items() if not 0.0 < v <= 1.0}
        if bad:
            errors.append(f"hardware.gpu_memory_utilization {bad}: each fraction must be in (0, 1]")
        if placement == "gpu1" and not missing and sum(frac[r] for r in ROLES) >= 1.0:
            errors.append(f"hardware.gpu_memory_utilization {frac} sums to {sum(frac[r] for r in ROLES):.2f}: "
                          "on one GPU (gpu1) the three roles' fractions must sum to < 1")
        if check_devices and not errors:
            visible = visible_cuda_devices()
            need = 2 + tp if placement == "gpu3" else 1
            if visible is not None and visible < need:
                errors.append(f"hardware.gpus={gpus}: placement {placement} needs {need} GPUs but this process sees "
                              f"{visible} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
            elif visible is not None and visible < gpus:
                errors.append(f"hardware.gpus={gpus} but this process sees only {visible} GPUs")
    calls = _get(hw, "device_calls", 1)
    if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
        errors.append(f"hardware.device_calls={calls!r}: must be an integer >= 1 (engine calls at once on a device "
                      "that roles share)")
    if placement == "cpu" and float(_get(hw, "cpu_kvcache_gb", 1.0)) <= 0:
        errors.append("hardware.cpu_kvcache_gb must be > 0")


def cpu_inprocess() -> bool:
    """Opt-in (GSI_VLLM_INPROCESS=1): the CPU engines run inside this process (see the module docstring)."""
    return os.environ.get("GSI_VLLM_INPROCESS", "0") == "1"


def cpu_threads_bind() -> str:
    """vLLM's OpenMP thread binding for CPU engines: VLLM_CPU_OMP_THREADS_BIND if the user set it, else "nobind"
    (vLLM's default binds every engine's worker to the same core; we let the OS schedule the three instead)."""
    return os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")


def prepare_process_env(placement: str) -> None:
    """Process-wide settings the engines read at start (same for all three, so threads do not race on them)."""
    if placement == "cpu":
        if "VLLM_CPU_KVCACHE_SPACE" in os.environ:
            log.warning("ignoring VLLM_CPU_KVCACHE_SPACE=%s: hardware.cpu_kvcache_gb sets each engine's KV cache",
                        os.environ["VLLM_CPU_KVCACHE_SPACE"])
            del os.environ["VLLM_CPU_KVCACHE_SPACE"]
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_threads_bind()
        # Three engines' OpenMP pools share the cores: a thread that busy-waits at a barrier (libgomp's default)
        # spins on a core another engine needs. Measured on 2 cores, one toy GSI-vs-RSD claim: the same wall
        # time, 118 CPU s instead of 138 (passive waiting); a user's setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if cpu_inprocess():
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"


def start_parallel(plan, specs) -> bool:
    """Whether the engines of `plan` (gsi.engines.plan.Plan) can start at the same time: not on one GPU (vLLM's
    memory profiling), not in process, and not when an engine needs its own CUDA_VISIBLE_DEVICES (a vLLM without
    device_ids)."""
    if plan.placement == "gpu1" or (plan.placement == "cpu" and cpu_inprocess()):
        return False
    return not any(s.env for s in specs)
