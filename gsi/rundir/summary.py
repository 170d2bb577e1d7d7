"""summary.json's results part, assembled in one place for a run (gsi.run), merged shards (gsi.rundir.merge)
and the report's in-memory merge of shards (experiments/runs.py): the totals over the run's records
(gsi.rundir.results.summarize, ideal FLOPs per token: gsi.reporting.compute) and the run's identity."""

from __future__ import annotations

from gsi.reporting.compute import flops_per_token
from gsi.roles import ROLES
from gsi.rundir.results import summarize


def run_summary(records: list[dict], params: dict, *, method: str, dataset: str, model: str, seed, beta,
                grader: str) -> dict:
    """The summary of `records` (in the run's order) from models of `params` parameters per role. The keys come
    in summary.json's order: the totals, then method, dataset, model, seed, beta, params, grader."""
    summary = summarize(records, flops_per_token={r: flops_per_token(params.get(r, 0)) for r in ROLES},
                        has_acceptance=records[0]["acceptance"] if records else False)
    summary.update(method=method, dataset=dataset, model=model, seed=seed, beta=beta, params=params, grader=grader)
    return summary
