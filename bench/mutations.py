"""Mutation check of the test suite: each mutation below is a bug the suite must catch. For each, the checkout is
copied into a temporary folder (the working tree is never touched), the mutation applied there, the named tests
run, and the tests that fail are listed; a mutation that no test catches is reported as SURVIVED (exit status 1).

    python bench/mutations.py                  # every mutation, on its cheap catchers (no vLLM, no SLURM)
    python bench/mutations.py --full           # every mutation, on its catchers with vLLM and SLURM tests too
    python bench/mutations.py prm_context fsync_results   # some of them
    python bench/mutations.py --list
    python bench/mutations.py --root /path/to/other/checkout   # mutate and test another checkout (e.g. an older one)

The test files named per mutation are where the catching tests live (default: the cheap files, their vLLM and
SLURM tests deselected; --full: every test of those files and of the vLLM/SLURM files); the rest of the suite is
not run. Each pytest run has a time limit (--timeout-s, a
mutation may make a loop endless): a run that hits it counts as caught only if the mutation says it may hang.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Mutation:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: list[str]  # cheap catchers (pytest arguments)
    full: list[str] = field(default_factory=list)  # catchers that start vLLM engines or a SLURM cluster

    def apply(self, root: Path) -> None:
        f = root / self.path
        text = f.read_text()
        if text.count(self.old) != 1:
            raise SystemExit(f"{self.name}: the text to mutate occurs {text.count(self.old)} times in {self.path} "
                             "(the code changed: update bench/mutations.py)")
        f.write_text(text.replace(self.old, self.new))


MUTATIONS = [
    Mutation("prm_context", "the PRM fed only the candidate step, not the steps before it", "gsi/methods/base.py",
             "steps=[*steps, candidates[i].text]", "steps=[candidates[i].text]",
             ["tests/test_engine_requests.py"], ["tests/test_context.py"]),
    Mutation("pib_bare_prompt", "pi_B teacher-forces the candidate after the bare prompt, not the context",
             "gsi/methods/base.py", "out = await gather(*(Score(role, tuple(context), c.token_ids)",
             "out = await gather(*(Score(role, tuple(s.prompt_ids), c.token_ids)",
             ["tests/test_engine_requests.py"], ["tests/test_context.py"]),
    Mutation("gsi_no_logp_small", "log pi_S dropped from GSI's weights (exp(beta r) pi_B, no / pi_S)",
             "gsi/methods/gsi.py", "ratio = [b - c.logprob for b, c in zip(lb, drafts)]",
             "ratio = [b for b, c in zip(lb, drafts)]", ["tests/test_methods.py"]),
    Mutation("fallback_hard_max", "GSI's fallback picks the best reward instead of drawing by exp(beta r)",
             "gsi/methods/gsi.py", 'j, p = soft_choice([beta * x for x in r], self.ctx.rng(s, "fallback"))',
             'from gsi.methods.base import hard_choice\n'
             '        j, p = hard_choice([beta * x for x in r], self.ctx.rng(s, "fallback"))',
             ["tests/test_methods.py"]),
    Mutation("no_run_lock", "the run-folder lock not taken (flock skipped)", "gsi/rundir/lock.py",
             "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", "pass", ["tests/test_run_folder.py"]),
    Mutation("no_fsync_results", "fsync dropped from the results writer (results.jsonl appends)", "gsi/rundir/results.py",
             '            f.write(json.dumps(record) + "\\n")\n            f.flush()\n            os.fsync(f.fileno())',
             '            f.write(json.dumps(record) + "\\n")\n            f.flush()', ["tests/test_results.py"]),
    Mutation("watcher_one_poll", "the SLURM watcher calls a job finished on one poll (two-poll rule removed)",
             "gsi/cluster/slurm.py", "elif job_id in self._final_once:", "elif True:", ["tests/test_slurm.py"],
             ["tests/test_slurm.py"]),
    Mutation("no_progress_check", "the scheduler's no-progress check removed (a stuck method loops forever)",
             "gsi/runtime/scheduler.py", "if [_progress(p.state) for p in g.members] == g.before:", "if False:",
             ["tests/test_run_folder.py"]),
    Mutation("empty_to_prm", "empty candidates sent to the PRM (which rescores the last step)",
             "gsi/methods/base.py", "enumerate(candidates) if not is_empty(c, self.ctx.delimiter)]", "enumerate(candidates)]",
             ["tests/test_accounting.py"]),
]


def copy_checkout(root: Path, dest: Path) -> None:
    """The tracked and untracked-but-not-ignored files of the checkout (what `git status` sees; without git, every
    file but .venv, outputs and caches), plus a link to its .venv."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, capture_output=True)
    if listed.returncode == 0:
        for rel in filter(None, listed.stdout.decode().split("\0")):
            src = root / rel
            if src.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
    else:
        shutil.copytree(root, dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".venv", "outputs", "__pycache__", ".pytest_cache"))
    if (root / ".venv").exists():
        os.symlink((root / ".venv").resolve(), dest / ".venv")


def run_tests(root: Path, args: list[str], timeout_s: float) -> tuple[str, list[str], str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.setdefault("GSI_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", "--durations=0", *args]
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s,
                              start_new_session=True)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return "timeout", [], out
    failed = sorted(set(re.findall(r"^FAILED (\S+)", proc.stdout, re.M)))
    errors = sorted(set(re.findall(r"^ERROR (\S+)", proc.stdout, re.M)))
    status = "caught" if failed or errors else ("survived" if proc.returncode == 0 else f"rc={proc.returncode}")
    return status, failed + [f"{e} (error)" for e in errors], proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="mutations to run (default: all)")
    ap.add_argument("--full", action="store_true", help="also the vLLM/SLURM catchers")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--timeout-s", type=float, default=900)
    ap.add_argument("--keep", action="store_true", help="keep the mutated copies (printed)")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout to mutate (default: this one)")
    args = ap.parse_args()
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTATIONS}
    if unknown:
        raise SystemExit(f"unknown mutations {sorted(unknown)}; --list lists them")
    if args.list:
        for m in chosen:
            print(f"{m.name:20} {m.what}\n{'':20} {' '.join(m.tests + m.full)}")
        return 0
    survived = []
    for m in chosen:
        tmp = Path(tempfile.mkdtemp(prefix=f"gsi-mutant-{m.name}-"))
        try:
            copy_checkout(args.root.resolve(), tmp)
            m.apply(tmp)
            tests = m.tests + m.full if args.full else [*m.tests, "-m", "not vllm and not slurm"]
            status, failed, out = run_tests(tmp, tests, args.timeout_s)
        finally:
            if args.keep:
                print(f"  (kept {tmp})")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        print(f"{m.name}: {status} -- {m.what}\n  ran: {' '.join(tests)}")
        for t in failed:
            print(f"  FAILED {t}")
        if status != "caught":
            survived.append(m.name)
            print("\n".join("  | " + line for line in out.splitlines()[-15:]))
        sys.stdout.flush()
    print(f"\n{len(chosen) - len(survived)} of {len(chosen)} mutations caught"
          + (f"; not caught: {', '.join(survived)}" if survived else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
