"""Command line: re-grade a results file, or grade one answer.

    python -m grading check outputs/.../results.jsonl [--grader qwen] [--dataset-field dataset] [--timeout 5]
    python -m grading grade "... \\boxed{1/2}" "0.5" [--grader prm800k]

`check` reads JSONL with one object per line holding at least `id`, `final_text`, `reference` and the old
`correct` (optionally `extracted`), grades every row again under `--grader` (ours, prm800k, qwen; default ours)
and prints the old and new accuracy and a table of the rows where the verdicts differ. Malformed lines are
reported as FILE:LINE and left out of the counts. `--dataset-field NAME` adds per-value accuracy for a field such
as `dataset`. Beside FILE it writes `summary.<grader>.json` (accuracy under that grader, the old accuracy and
grader, verdict rules, disagreements) and `regraded.<grader>.jsonl` (id, correct, rule, extracted per row);
`--out DIR` puts them elsewhere. Exit code 0 unless the file cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

from grading import grade, grade_many
from grading.graders import DEFAULT, GRADERS
from grading.lifetime import check_timeout

REQUIRED = ("id", "final_text", "reference", "correct")


def _read_rows(path: str, fields: dict[str, str]):
    rows, problems = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{where}: not valid JSON ({e.msg})")
                continue
            if not isinstance(obj, dict):
                problems.append(f"{where}: not a JSON object")
                continue
            missing = [fields[k] for k in REQUIRED if fields[k] not in obj]
            if missing:
                problems.append(f"{where}: missing key(s) {', '.join(missing)}")
                continue
            if not isinstance(obj[fields["final_text"]], (str, type(None))):
                problems.append(f"{where}: {fields['final_text']} is not a string")
                continue
            rows.append((lineno, obj))
    return rows, problems


def _as_bool(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "y", "t")
    return bool(v)


def cmd_check(args) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    fields = {"id": args.id_field, "final_text": args.text_field, "reference": args.reference_field,
              "correct": args.correct_field}
    try:
        rows, problems = _read_rows(args.file, fields)
    except OSError as e:
        console.print(f"[red]cannot read {args.file}: {e}[/red]")
        return 2
    for p in problems:
        console.print(f"[yellow]skipped[/yellow] {p}", soft_wrap=True, highlight=False)
    verdicts = grade_many([(o[fields["final_text"]] or "", o[fields["reference"]]) for _, o in rows],
                          timeout=args.timeout, workers=args.workers, grader=args.grader)
    n = len(rows)
    old = [_as_bool(o[fields["correct"]]) for _, o in rows]
    new = [bool(v) for v in verdicts]
    if n == 0:
        console.print("no gradable rows")
        return 0
    written = write_regraded(args, rows, fields, old, verdicts)
    summary = Table(title=f"{args.file}: {n} rows, grader {args.grader}"
                    + (f", {len(problems)} malformed line(s) skipped" if problems else ""))
    summary.add_column("group")
    summary.add_column("rows", justify="right")
    summary.add_column("old acc", justify="right")
    summary.add_column("new acc", justify="right")
    summary.add_column("disagree", justify="right")
    groups: dict[str, list[int]] = defaultdict(list)
    if args.dataset_field:
        for i, (_, o) in enumerate(rows):
            groups[str(o.get(args.dataset_field, "?"))].append(i)
    groups_all = {"all": list(range(n)), **dict(sorted(groups.items()))}
    for name, idx in groups_all.items():
        summary.add_row(name, str(len(idx)), f"{sum(old[i] for i in idx) / len(idx):.4f}",
                        f"{sum(new[i] for i in idx) / len(idx):.4f}", str(sum(old[i] != new[i] for i in idx)))
    console.print(summary)
    rules = defaultdict(int)
    for v in verdicts:
        rules[v.rule] += 1
    console.print("rules: " + ", ".join(f"{k}={v}" for k, v in sorted(rules.items(), key=lambda kv: -kv[1])))
    diffs = [i for i in range(n) if old[i] != new[i]]
    if diffs:
        t = Table(title=f"{len(diffs)} disagreement(s)", show_lines=False)
        for col in ("line", "id", "old", "new", "rule", "old extracted", "extracted", "reference"):
            t.add_column(col, overflow="fold")
        for i in diffs:
            lineno, o = rows[i]
            v = verdicts[i]
            t.add_row(str(lineno), str(o[fields["id"]]), str(old[i]), str(new[i]), v.rule,
                      _short(o.get("extracted")), _short(v.extracted), _short(str(o[fields["reference"]])))
        console.print(t)
    else:
        console.print("no disagreements")
    console.print("wrote " + ", ".join(str(p) for p in written), soft_wrap=True, highlight=False)
    return 0


def write_regraded(args, rows, fields, old: list[bool], verdicts) -> list:
    """summary.<grader>.json and regraded.<grader>.jsonl beside the file (or in --out)."""
    from pathlib import Path

    src = Path(args.file)
    out = Path(args.out) if args.out else src.parent
    out.mkdir(parents=True, exist_ok=True)
    n = len(rows)
    rules: dict[str, int] = defaultdict(int)
    for v in verdicts:
        rules[v.rule] += 1
    old_graders = sorted({str(o.get("grader", "ours")) for _, o in rows})
    summary = {
        "grader": args.grader,
        "source": str(src.resolve()),
        "n_problems": n,
        "accuracy": sum(bool(v) for v in verdicts) / n,
        "old_accuracy": sum(old) / n,
        "old_grader": old_graders[0] if len(old_graders) == 1 else old_graders,
        "disagreements": sum(o != bool(v) for o, v in zip(old, verdicts)),
        "rules": dict(sorted(rules.items())),
        "timeout_s": args.timeout,
    }
    summary_path = out / f"summary.{args.grader}.json"
    summary_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    rows_path = out / f"regraded.{args.grader}.jsonl"
    with open(rows_path, "w", encoding="utf-8") as f:
        for (_, o), v in zip(rows, verdicts):
            f.write(json.dumps({"id": o[fields["id"]], "correct": bool(v), "rule": v.rule, "extracted": v.extracted,
                                "grader": args.grader}, ensure_ascii=False) + "\n")
    return [summary_path, rows_path]


def _short(s, n: int = 80) -> str:
    if s is None:
        return "-"
    s = str(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def cmd_grade(args) -> int:
    v = grade(args.text, args.reference, timeout=args.timeout, grader=args.grader)
    print(json.dumps({"correct": v.correct, "rule": v.rule, "extracted": v.extracted, "reference": v.reference},
                     ensure_ascii=False))
    return 0


def _timeout(text: str) -> float:
    try:
        return check_timeout(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m grading", description="Grade math answers.")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="re-grade a results JSONL file and compare with its old verdicts")
    c.add_argument("file")
    c.add_argument("--dataset-field", default=None, help="also report accuracy per value of this field")
    c.add_argument("--id-field", default="id")
    c.add_argument("--text-field", default="final_text")
    c.add_argument("--reference-field", default="reference")
    c.add_argument("--correct-field", default="correct")
    c.add_argument("--timeout", type=_timeout, default=5.0, help="CPU seconds per answer, in (0, 600]")
    c.add_argument("--workers", type=int, default=None)
    c.add_argument("--grader", choices=list(GRADERS), default=DEFAULT, help="the rules to grade by (default: ours)")
    c.add_argument("--out", default=None, help="folder for summary.<grader>.json (default: beside FILE)")
    c.set_defaults(func=cmd_check)
    g = sub.add_parser("grade", help="grade one generated text against one reference")
    g.add_argument("text")
    g.add_argument("reference")
    g.add_argument("--timeout", type=_timeout, default=5.0, help="CPU seconds per answer, in (0, 600]")
    g.add_argument("--grader", choices=list(GRADERS), default=DEFAULT)
    g.set_defaults(func=cmd_grade)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
