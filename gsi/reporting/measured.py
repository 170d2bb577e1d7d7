"""What a run measured for its summary: the engines' counters over this session, the FLOPs they executed, and the
parameter counts (from the engines, or recovered when a resume started none)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from gsi.engines.plan import model_params, validate
from gsi.reporting.utilisation import engine_delta

log = logging.getLogger(__name__)


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
