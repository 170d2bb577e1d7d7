"""What the W&B tracker logs, computed from results.jsonl records and summary.json: the per-problem table's rows,
the running totals shown live (the same arithmetic as gsi.rundir.results.summarize, so the last values equal the
summary's) and the claim's columns."""

from __future__ import annotations

from gsi.reporting.compute import flops_per_token
from gsi.reporting.thresholds import threshold_of
from gsi.roles import ROLES

# Columns of the per-problem table, from a results.jsonl record (see gsi.run.make_record).
TABLE_COLUMNS = (
    ["index", "id", "correct", "extracted", "reference", "steps", "accepted_steps", "steps_small", "steps_big",
     "chosen_draft_tokens", "accepted_draft_tokens"]
    + [f"tokens_{role}_{kind}" for role in ROLES for kind in ("generated", "context")]
    + [f"flops_{role}" for role in ROLES]
    + ["time_s", "stop_reason", "grade_rule", "final_text"]
)


def role_flops(tokens: dict, params: dict) -> dict[str, float]:
    """Ideal FLOPs per role of token counts {role: {"generated": ..., "context": ...}}."""
    return {role: flops_per_token(params.get(role, 0)) * (tokens[role]["generated"] + tokens[role]["context"])
            for role in ROLES}


def table_row(record: dict, params: dict) -> list:
    flops = role_flops(record["tokens"], params)
    steps_by = record.get("steps_by", {})
    return ([record.get("index"), str(record["id"]), bool(record["correct"]), record.get("extracted"),
             record.get("reference"), record["steps"], record["accepted_steps"], steps_by.get("small", 0),
             steps_by.get("big", 0), record.get("chosen_draft_tokens", record.get("draft_tokens", 0)),
             record.get("accepted_draft_tokens", 0)]
            + [record["tokens"][role][kind] for role in ROLES for kind in ("generated", "context")]
            + [flops[role] for role in ROLES]
            + [record.get("time_s"), record.get("stop_reason"), record.get("grade_rule"), record.get("final_text")])


def claim_columns(summary: dict, method: dict, beta) -> dict:
    """What GSI's claim is judged on, flat (the report's columns): pi_B's generated tokens, the step loop's time
    without engine start-up, the method's settings (n, beta, the threshold on its scale: gsi.reporting.thresholds), and the
    ideal and executed FLOPs."""
    measured = summary.get("measured") or {}
    thr = threshold_of(method, beta)
    executed = measured.get("flops_executed")
    return {"big_generated_tokens": ((summary.get("tokens") or {}).get("big") or {}).get("generated"),
            "step_loop_s": measured.get("step_loop_s"), "engine_start_s": measured.get("engine_start_s"),
            "n": method.get("n"), "beta": beta, "threshold": thr.text if thr else None,
            "threshold_value": thr.value if thr else None, "threshold_axis": thr.axis if thr else None,
            "flops_ideal": (summary.get("flops") or {}).get("total"),
            "flops_executed": sum(executed.values()) if executed else None}


class RunningTotals:
    """Running accuracy, acceptance, tokens and FLOPs over the finished problems (what W&B shows live). The same
    arithmetic as gsi.rundir.results.summarize, so the last values equal the summary's."""

    def __init__(self):
        self.problems = self.correct = self.steps = self.accepted = self.draft = self.draft_kept = 0
        self.has_acceptance = False
        self.tokens = {role: {"generated": 0, "context": 0} for role in ROLES}

    def add(self, rec: dict) -> None:
        self.problems += 1
        self.correct += bool(rec["correct"])
        self.steps += rec["steps"]
        self.accepted += rec["accepted_steps"]
        self.draft += rec.get("chosen_draft_tokens", rec.get("draft_tokens", 0))
        self.draft_kept += rec.get("accepted_draft_tokens", 0)
        self.has_acceptance = self.has_acceptance or bool(rec.get("acceptance"))
        for role in ROLES:
            for kind in ("generated", "context"):
                self.tokens[role][kind] += rec["tokens"][role][kind]

    def metrics(self, params: dict | None = None, *, done_count: int | None = None, total: int | None = None,
                engine_stats: dict | None = None) -> dict:
        done = done_count if done_count is not None else self.problems
        m = {"progress/problems_done": done, "running/accuracy": self.correct / max(self.problems, 1),
             "running/steps_per_problem": self.steps / max(self.problems, 1)}
        if total:
            m["progress/total"] = total
            m["progress/fraction"] = done / total
        if self.has_acceptance:
            m["running/acceptance_rate"] = self.accepted / max(self.steps, 1)
            m["running/acceptance_rate_tokens"] = self.draft_kept / max(self.draft, 1)
        for role in ROLES:
            m[f"running/tokens/{role}/generated"] = self.tokens[role]["generated"]
            m[f"running/tokens/{role}/context"] = self.tokens[role]["context"]
        if params:
            flops = role_flops(self.tokens, params)
            m.update({f"running/flops/{role}": f for role, f in flops.items()})
            m["running/flops/total"] = sum(flops.values())
        for role, st in (engine_stats or {}).items():
            for key in ("busy_s", "busy_fraction", "generated_tokens", "prefilled_tokens", "cached_tokens"):
                if key in st:
                    m[f"engine/{role}/{key}"] = st[key]
        return m
