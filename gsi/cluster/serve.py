"""Serve one role on vLLM's OpenAI-compatible server, with the flags our engines rely on, and print its URL.

    python -m gsi.cluster.serve role=big model=qwen25_math hardware=gpu1 [port=8002] [host=0.0.0.0] [url_file=PATH]
    python -m gsi.cluster.serve role=small model=tiny hardware=cpu hardware.cpu_kvcache_gb=0.25 port=8001 --dry-run

Everything after the `role`, `port`, `host`, `url_file` keys is a run-config override (composed like run.py), so
a server gets exactly the engine arguments an in-process engine of the same config gets (gsi.engines.specs.
engine_specs), plus what a remote role needs (gsi/engines/remote.py):
- `--worker-extension-cls gsi.engines.worker.TemperatureExtension` and VLLM_SERVER_DEV_MODE=1 (for
  `/collective_rpc`): once the server is up, the temperature `generation.temperature` is set INSIDE the engine
  (vllm-facts §2) and read back from every worker. Clients at another temperature are refused.
- `--enable-scale-out`: the tokens-in/tokens-out endpoint `/inference/v1/generate`, which takes the engine's own
  SamplingParams (seeds, `prompt_logprobs`, `skip_reading_prefix_cache=False`).
- `--enable-prompt-tokens-details`: each answer reports its prefix-cache hits (cached_tokens).
- `--generation-config vllm`, prefix caching, on the CPU no chunked prefill (seeded requests, vllm-facts §4),
  the PRM's runner and pooler (`--runner pooling --pooler-config ...`); a verifier PRM (`lm_verifier`) is served
  like a generator, at T = 1 (gsi.engines.verifier).
It prints `GSI_<ROLE>_URL=<url>` once the server answers (and writes it to `url_file`, for SLURM jobs that wait for
it), then serves until stopped (SIGINT/SIGTERM stop the server too). The `vllm` console script fails on the CPU
build; the server runs as `python -m vllm.entrypoints.openai.api_server`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from gsi.config.schema import compose_config
from gsi.engines.placement import cpu_threads_bind
from gsi.engines.plan import validate
from gsi.engines.rewards import ADAPTERS
from gsi.engines.specs import engine_specs
from gsi.engines.verifier import VERIFIER_TEMPERATURE

ROOT = Path(__file__).resolve().parents[2]
OWN_KEYS = ("role", "port", "host", "url_file")
DEFAULT_PORTS = {"small": 8001, "big": 8002, "reward": 8003}
START_TIMEOUT_S = float(os.environ.get("GSI_SERVE_START_TIMEOUT", "900"))


def parse(argv: list[str]) -> tuple[dict, list[str], bool]:
    own, overrides, dry = {}, [], False
    for arg in argv:
        if arg == "--dry-run":
            dry = True
            continue
        key = arg.split("=", 1)[0]
        if key in OWN_KEYS and "=" in arg:
            own[key] = arg.split("=", 1)[1]
        else:
            overrides.append(arg)
    if own.get("role") not in DEFAULT_PORTS:
        raise SystemExit(f"gsi.cluster.serve: give role=small|big|reward (got {own.get('role')!r})")
    return own, overrides, dry


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def served_temperature(cfg, role: str, plan) -> float | None:
    """The temperature `role`'s server runs at (set inside the engine, gsi.engines.worker), or None for a PRM on
    the pooling runner: the policies at generation.temperature, a verifier PRM at its own distribution."""
    if role != "reward":
        return float(cfg.generation.temperature)
    return VERIFIER_TEMPERATURE if ADAPTERS[plan.adapter].runner == "generate" else None


def server_command(cfg, role: str, host: str, port: int, plan=None) -> tuple[list[str], dict[str, str]]:
    """The api_server command line and environment for `role` under `cfg` (`plan`: validate's, if already made)."""
    hw = cfg.hardware
    if str(getattr(hw.placement, "value", hw.placement)) == "remote":
        raise SystemExit("gsi.cluster.serve: hardware=remote describes clients; serve with the hardware the server runs on "
                         "(hardware=gpu1, cpu, ...)")
    plan = plan or validate(cfg, check_devices=False)
    spec = engine_specs(cfg, plan, roles=[role])[0]
    kw = dict(spec.kwargs)
    kw.pop("device_ids", None)  # a server uses the GPUs its job sees (CUDA_VISIBLE_DEVICES)
    pooler = kw.pop("pooler_config", None)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model, "--host", host,
           "--port", str(port), "--enable-scale-out", "--enable-prompt-tokens-details"]
    if served_temperature(cfg, role, plan) is not None:
        kw["worker_extension_cls"] = "gsi.engines.worker.TemperatureExtension"
    for key, value in kw.items():
        if isinstance(value, bool):
            if key in ("enforce_eager", "trust_remote_code"):
                cmd += [_flag(key)] if value else []
            else:
                cmd += [_flag(key) if value else "--no-" + key.replace("_", "-")]
        elif value is not None:
            cmd += [_flag(key), str(value)]
    if pooler is not None:
        cmd += ["--pooler-config", json.dumps(ADAPTERS[plan.adapter].vllm_pooler_config)]
    env = {"VLLM_SERVER_DEV_MODE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    if plan.placement == "cpu":
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_threads_bind()
    return cmd, env


def _get(url: str, timeout: float = 5.0):
    import requests

    return requests.get(url, timeout=timeout)


def wait_until_up(proc: subprocess.Popen, url: str, timeout: float = START_TIMEOUT_S) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gsi.cluster.serve: the server exited with status {proc.returncode} before answering")
        try:
            if _get(url + "/health").status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1.0)
    raise SystemExit(f"gsi.cluster.serve: no answer from {url}/health after {timeout:.0f} s")


def set_temperature(url: str, temperature: float) -> list:
    """Put `temperature` inside the served engine and return every worker's logits scale (checked)."""
    import requests

    r = requests.post(url + "/collective_rpc", json={"method": "gsi_set_temperature", "args": [str(temperature)]},
                      timeout=120)
    r.raise_for_status()
    scales = requests.post(url + "/collective_rpc", json={"method": "gsi_get_scale"}, timeout=120).json()["results"]
    flat = [s for w in scales for s in (w or [])]
    if not flat or any(abs(s - 1.0 / temperature) > 1e-6 for s in flat):
        raise SystemExit(f"gsi.cluster.serve: setting T={temperature} left logits scales {scales}")
    return scales


def public_host(host: str) -> str:
    return socket.getfqdn() if host in ("0.0.0.0", "::") else host


def main(argv: list[str] | None = None) -> int:
    own, overrides, dry = parse(list(sys.argv[1:] if argv is None else argv))
    role = own["role"]
    host = own.get("host", "127.0.0.1")
    port = int(own.get("port", DEFAULT_PORTS[role]))
    cfg = compose_config(*overrides)
    plan = validate(cfg, check_devices=False)
    cmd, env = server_command(cfg, role, host, port, plan)
    if dry:
        print(" ".join(f"{k}={v}" for k, v in env.items()), " ".join(cmd))
        return 0
    url = f"http://{public_host(host)}:{port}"
    local_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    proc = subprocess.Popen(cmd, env={**os.environ, **env})  # in our process group: a kill of the group stops both

    def stop(signum, frame):
        proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        wait_until_up(proc, local_url)
        temperature = served_temperature(cfg, role, plan)
        if temperature is not None:
            set_temperature(local_url, temperature)
        print(f"GSI_{role.upper()}_URL={url}", flush=True)
        if own.get("url_file"):
            path = Path(own["url_file"])
            path.write_text(url + "\n")
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
