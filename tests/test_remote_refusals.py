"""Remote roles without a vLLM server (cheap, always on): what gsi.cluster.serve starts, and the refusals of servers that
cannot give in-process semantics, against a fake HTTP server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gsi.engines.remote import RemoteGenerator, RemoteRoleError


class _Fake(BaseHTTPRequestHandler):
    routes: dict = {}

    def _answer(self):
        code, body = self.routes.get(self.path, (404, {"detail": "Not Found"}))
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._answer()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer()

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    def start(routes):
        handler = type("Handler", (_Fake,), {"routes": routes})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    servers = []
    yield start
    for s in servers:
        s.shutdown()


MODELS = (200, {"data": [{"id": "tiny", "max_model_len": 2048}]})


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from gsi.models.tiny import tiny_paths

    return AutoTokenizer.from_pretrained(str(tiny_paths()["small"]))


def connect(url, tokenizer, temperature=0.7):
    return RemoteGenerator("big", url, tokenizer, temperature=temperature, delimiter="\n\n",
                           eos_token_ids=[tokenizer.eos_token_id])


def test_unreachable_server_names_the_role(tokenizer):
    with pytest.raises(RemoteRoleError, match=r"the big server at http://127.0.0.1:9 is unreachable"):
        connect("http://127.0.0.1:9", tokenizer)


def test_server_without_the_temperature_extension_is_refused(fake_server, tokenizer):
    url = fake_server({"/v1/models": MODELS})  # a plain `vllm serve`: no /collective_rpc
    with pytest.raises(RemoteRoleError, match="untempered"):
        connect(url, tokenizer)


def test_server_at_another_temperature_is_refused(fake_server, tokenizer):
    url = fake_server({"/v1/models": MODELS, "/collective_rpc": (200, {"results": [[1 / 0.7]]})})
    with pytest.raises(RemoteRoleError, match=r"samples at T=0.7 .* generation.temperature=1.0"):
        connect(url, tokenizer, temperature=1.0)


def test_server_without_token_endpoint_is_refused(fake_server, tokenizer):
    url = fake_server({"/v1/models": MODELS, "/collective_rpc": (200, {"results": [[1 / 0.7]]}),
                       "/inference/v1/generate": (403, {"error": "Scale-out endpoints are disabled"})})
    with pytest.raises(RemoteRoleError, match="--enable-scale-out"):
        connect(url, tokenizer)


def test_answers_are_read_as_in_process(fake_server, tokenizer):
    """A server's answers through the shared front end: a sampled step's log-prob is the sum of its tokens', its
    finish is read from its last token; a teacher-forced score reads the continuation's prompt log-probs, and a
    log-prob that names another token than the one sampled is refused."""
    from gsi.engines.base import FINISH_DELIMITER, GenerateRequest
    from gsi.engines.frontend import delimiter_token_ids

    delim = delimiter_token_ids(tokenizer, "\n\n")[0]
    answer = {"choices": [{"token_ids": [11, delim], "logprobs": {"content": [
                  {"token_id": 11, "logprob": -0.5}, {"token_id": delim, "logprob": -0.25}]}}],
              "prompt_logprobs": [None, {"6": {"logprob": -1.0}}, {"7": {"logprob": -0.125}}],
              "usage": {"prompt_tokens_details": {"cached_tokens": 0}}}
    url = fake_server({"/v1/models": MODELS, "/collective_rpc": (200, {"results": [[1 / 0.7]]}),
                       "/inference/v1/generate": (200, answer)})
    gen = connect(url, tokenizer)
    assert gen.info.cached_tokens_reported
    (steps,) = gen.generate([GenerateRequest(context=[5, 6], n=2, seed=3, max_tokens=4)])
    assert [(s.token_ids, s.logprob, s.finish) for s in steps] == [((11, delim), -0.75, FINISH_DELIMITER)] * 2
    assert gen.score([[5, 6]], [[7]]) == [-0.125] and gen.score_resends == 0
    answer["choices"][0]["logprobs"]["content"][1]["token_id"] = delim + 1
    url = fake_server({"/v1/models": MODELS, "/collective_rpc": (200, {"results": [[1 / 0.7]]}),
                       "/inference/v1/generate": (200, answer)})
    with pytest.raises(RemoteRoleError, match=f"the big server at {url} returned no log-prob for sampled token"):
        connect(url, tokenizer).generate([GenerateRequest(context=[5, 6], n=1, seed=3, max_tokens=4)])


def test_serve_starts_vllm_with_the_flags_our_engines_rely_on(make_cfg):
    from gsi.cluster.serve import server_command

    cfg = make_cfg("model=tiny", "hardware=cpu", "hardware.cpu_kvcache_gb=0.25")
    cmd, env = server_command(cfg, "big", "127.0.0.1", 8002)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    for flag in ("--enable-scale-out", "--enable-prompt-tokens-details", "--enable-prefix-caching",
                 "--no-enable-chunked-prefill"):
        assert flag in cmd
    assert cmd[cmd.index("--worker-extension-cls") + 1] == "gsi.engines.worker.TemperatureExtension"
    assert env["VLLM_SERVER_DEV_MODE"] == "1"
    reward, _ = server_command(cfg, "reward", "127.0.0.1", 8003)
    assert reward[reward.index("--runner") + 1] == "pooling" and "--worker-extension-cls" not in reward


def test_remote_placement_needs_a_url_per_role(make_cfg):
    from gsi.engines.plan import validate
    from gsi.engines.resolve import ConfigError

    cfg = make_cfg("model=tiny", "hardware=remote", "hardware.remote.big=")
    with pytest.raises(ConfigError, match=r"hardware.remote lacks \['big'\]"):
        validate(cfg, check_devices=False)
    cfg = make_cfg("model=tiny", "hardware=cpu", "+hardware.remote.big=node7:8002")
    with pytest.raises(ConfigError, match="must start with http"):
        validate(cfg, check_devices=False)
