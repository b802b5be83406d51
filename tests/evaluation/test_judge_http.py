"""The OpenAI-compatible judge client against a stub server on 127.0.0.1: success with the auth
header, retries on 5xx and 429, timeouts, refused connections, non-retryable errors, malformed
replies, and a full pairwise judgement over HTTP."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from prefalign.evaluation.http_client import ChatCompletionClient, EndpointError, EndpointSettings, MalformedReplyError
from prefalign.evaluation.judge import HTTPJudgeBackend, PairwiseJudge, VerdictParseError, summarize


def completion(content):
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
    }


class Stub:
    """Serves scripted replies in order; each is (status, body, headers, delay_s) or a callable(request_json)."""

    def __init__(self):
        self.script, self.requests = [], []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "headers": dict(self.headers), "json": body})
                step = stub.script.pop(0) if stub.script else (500, "script exhausted", {}, 0)
                status, reply, headers, delay = step(body) if callable(step) else step
                time.sleep(delay)
                data = (
                    reply
                    if isinstance(reply, bytes)
                    else (json.dumps(reply) if not isinstance(reply, str) else reply).encode()
                )
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and went away

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def stub():
    server = Stub()
    yield server
    server.server.shutdown()
    server.server.server_close()


def client_for(base_url, *, sleeps=None, **settings):
    defaults = {"model": "judge-1", "api_key": "secret", "timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.5}
    recorded = sleeps if sleeps is not None else []
    return ChatCompletionClient(EndpointSettings(base_url=base_url, **{**defaults, **settings}), sleep=recorded.append)


def test_success_sends_model_messages_params_and_bearer_token(stub):
    stub.script = [(200, completion("More helpful: A"), {}, 0)]
    reply = client_for(stub.base_url).complete([{"role": "user", "content": "hi"}], temperature=0.0, max_tokens=5)
    assert reply == "More helpful: A"
    (request,) = stub.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer secret"
    assert request["json"] == {
        "model": "judge-1",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.0,
        "max_tokens": 5,
    }


def test_no_auth_header_without_key_and_v1_base_urls(stub):
    stub.script = [(200, completion("ok"), {}, 0)]
    client_for(stub.base_url + "/v1/", api_key=None).complete([{"role": "user", "content": "x"}])
    assert stub.requests[0]["path"] == "/v1/chat/completions"
    assert "Authorization" not in stub.requests[0]["headers"]


def test_5xx_then_success_retries_with_backoff(stub):
    stub.script = [(503, "overloaded", {}, 0), (500, "oops", {}, 0), (200, completion("B"), {}, 0)]
    sleeps = []
    assert client_for(stub.base_url, sleeps=sleeps).complete([{"role": "user", "content": "x"}]) == "B"
    assert len(stub.requests) == 3 and sleeps == [0.5, 1.0]


def test_429_honours_retry_after_up_to_the_cap(stub):
    stub.script = [(429, "slow down", {"Retry-After": "7"}, 0), (200, completion("A"), {}, 0)]
    sleeps = []
    client_for(stub.base_url, sleeps=sleeps, max_backoff_s=5.0).complete([{"role": "user", "content": "x"}])
    assert sleeps == [5.0]


def test_persistent_5xx_gives_up_with_the_last_error(stub):
    stub.script = [(502, "bad gateway", {}, 0)] * 3
    with pytest.raises(EndpointError, match=r"gave up after 3 attempts; last error: HTTP 502: bad gateway"):
        client_for(stub.base_url).complete([{"role": "user", "content": "x"}])


def test_timeout_is_retried_then_reported(stub):
    stub.script = [(200, completion("late"), {}, 0.6), (200, completion("on time"), {}, 0)]
    assert client_for(stub.base_url, timeout_s=0.2).complete([{"role": "user", "content": "x"}]) == "on time"
    stub.script = [(200, completion("late"), {}, 0.6)]
    with pytest.raises(EndpointError, match="gave up after 1 attempts; last error: .*timed out"):
        client_for(stub.base_url, timeout_s=0.2, max_retries=0).complete([{"role": "user", "content": "x"}])


def test_refused_connection_is_reported():
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()  # nothing listens there now
    with pytest.raises(EndpointError, match="gave up after 2 attempts; last error: URLError"):
        client_for(f"http://127.0.0.1:{port}", max_retries=1).complete([{"role": "user", "content": "x"}])


def test_client_errors_are_not_retried(stub):
    stub.script = [(401, '{"error": "invalid api key"}', {}, 0)]
    with pytest.raises(EndpointError, match="HTTP 401 .*invalid api key"):
        client_for(stub.base_url).complete([{"role": "user", "content": "x"}])
    assert len(stub.requests) == 1


@pytest.mark.parametrize(
    "body,message",
    [
        ("<html>proxy error</html>", "not JSON"),
        ({"object": "error"}, "no 'choices' list"),
        ({"choices": []}, "no 'choices' list"),
        ({"choices": [{"message": {"role": "assistant"}}]}, "no string 'choices\\[0\\].message.content'"),
    ],
)
def test_malformed_replies(stub, body, message):
    stub.script = [(200, body, {}, 0)]
    with pytest.raises(MalformedReplyError, match=message):
        client_for(stub.base_url).complete([{"role": "user", "content": "x"}])


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("PREFALIGN_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("PREFALIGN_JUDGE_MODEL", "judge-env")
    monkeypatch.setenv("PREFALIGN_JUDGE_API_KEY", "env-key")
    settings = EndpointSettings.from_env(timeout_s=5.0)
    assert (settings.url, settings.model, settings.api_key, settings.timeout_s) == (
        "http://127.0.0.1:9/v1/chat/completions",
        "judge-env",
        "env-key",
        5.0,
    )
    monkeypatch.delenv("PREFALIGN_JUDGE_BASE_URL")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="PREFALIGN_JUDGE_BASE_URL"):
        EndpointSettings.from_env()


def test_pairwise_judgement_over_http(stub):
    def prefer_good(request):
        prompt = request["messages"][-1]["content"]
        a = prompt.split("Response A:\n")[1].split("\n\nResponse B:")[0]
        return 200, completion(f"Comparison: fine.\nMore helpful: {'A' if 'GOOD' in a else 'B'}"), {}, 0

    stub.script = [prefer_good] * 4
    judge = PairwiseJudge(HTTPJudgeBackend(client_for(stub.base_url)))
    judgements = judge.judge(["q1", "q2"], ["GOOD one", "meh"], ["meh", "GOOD two"])
    assert [j.outcome for j in judgements] == ["win", "loss"]
    assert summarize(judgements)["win_rate"] == 0.5
    assert all(r["json"]["temperature"] == 0.0 for r in stub.requests)


def test_unparseable_verdict_over_http(stub):
    stub.script = [(200, completion("Both are lovely."), {}, 0)] * 2
    with pytest.raises(VerdictParseError, match="comparison 0"):
        PairwiseJudge(HTTPJudgeBackend(client_for(stub.base_url))).judge(["q"], ["a"], ["b"])
