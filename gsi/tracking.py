"""Experiment tracking: W&B or nothing. Never the only copy of a number (results.jsonl and summary.json are),
and a tracker failure never fails the run."""

from __future__ import annotations


class NullTracker:
    def on_problem(self, record: dict, **progress) -> None:
        pass

    def finish(self, summary: dict, records: list[dict]) -> None:
        pass

    def close(self) -> None:
        pass


def build_tracker(cfg, out):
    if cfg.logger.name == "none":
        return NullTracker()
    raise ValueError(f"logger={cfg.logger.name!r} is not implemented")
