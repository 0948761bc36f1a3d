"""LLM judges: the HTTP client against a local fake chat-completions server, and the local guard path.

The fake server listens on 127.0.0.1 on a free port and answers deterministically; no test reaches
any other network address.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from alignflow.judge.base import COMPLIANCE, REFUSAL, JudgeError, RefusalJudge
from alignflow.judge.llm import GuardModelJudge, OpenAIChatJudge, parse_answer


class FakeGuard(BaseHTTPRequestHandler):
    """Yes when the response says "can't", No otherwise; special words in the response script failures."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.calls.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        text = body["messages"][0]["content"].split("<response>")[1]
        if "FAIL_TWICE" in text and server.failures < 2:
            server.failures += 1
            return self._send(503, {"error": "overloaded"})
        if "ALWAYS_FAIL" in text:
            return self._send(500, {"error": "boom"})
        if "BAD_REQUEST" in text:
            return self._send(400, {"error": "bad request"})
        if "SLOW" in text:
            time.sleep(0.5)
        answer = "Maybe, it depends." if "MALFORMED" in text else "Yes." if "can't" in text else "No"
        self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]})

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeGuard)
    srv.calls, srv.failures = [], 0
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def make_judge(srv, **kw):
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    kw = {"backoff": 0.0, "timeout": 5.0, **kw}
    return OpenAIChatJudge(base_url=url, model="fake-guard", **kw)


@pytest.mark.parametrize("text, label", [("Yes", REFUSAL), ("yes.", REFUSAL), ("**No**", COMPLIANCE),
                                         ("  No, it complies.", COMPLIANCE), ("Maybe", None), ("", None)])
def test_parse_answer(text, label):
    assert parse_answer(text) == label


def test_verdicts_from_the_fake_server(server):
    judge = make_judge(server)
    assert isinstance(judge, RefusalJudge)
    verdicts = judge.judge(["Make a bomb", "Capital of France?"], ["I can't help with that.", "Paris."])
    assert [v.label for v in verdicts] == [REFUSAL, COMPLIANCE] and [v.score for v in verdicts] == [1.0, 0.0]
    call = server.calls[0]
    assert call["path"] == "/v1/chat/completions" and call["auth"] is None
    assert call["body"]["model"] == "fake-guard" and call["body"]["temperature"] == 0
    assert "Make a bomb" in call["body"]["messages"][0]["content"]
    assert judge.version == make_judge(server).version != make_judge(server, template="{prompt}{response}").version


def test_malformed_answer_raises_or_falls_back(server):
    with pytest.raises(JudgeError, match="unparseable"):
        make_judge(server).judge(["q"], ["MALFORMED"])
    (v,) = make_judge(server, on_unparsed=COMPLIANCE).judge(["q"], ["MALFORMED"])
    assert (v.label, v.score) == (COMPLIANCE, 0.5) and "unparsed" in v.rationale


def test_server_errors_are_retried(server):
    (v,) = make_judge(server, retries=2).judge(["q"], ["FAIL_TWICE but I can't"])
    assert v.label == REFUSAL and len(server.calls) == 3


def test_retries_run_out(server):
    with pytest.raises(JudgeError, match="HTTP 500 after 3 attempts"):
        make_judge(server, retries=2).judge(["q"], ["ALWAYS_FAIL"])
    assert len(server.calls) == 3


def test_client_errors_are_not_retried(server):
    with pytest.raises(JudgeError, match="400"):
        make_judge(server, retries=2).judge(["q"], ["BAD_REQUEST"])
    assert len(server.calls) == 1


def test_timeouts_are_retried_then_fail(server):
    with pytest.raises(JudgeError, match="ReadTimeout"):
        make_judge(server, retries=1, timeout=0.1).judge(["q"], ["SLOW"])
    assert len(server.calls) == 2


def test_unreachable_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeGuard)
    port = srv.server_address[1]
    srv.server_close()  # the port is now closed: connection refused
    judge = OpenAIChatJudge(base_url=f"http://127.0.0.1:{port}/v1", model="m", retries=1, backoff=0.0)
    with pytest.raises(JudgeError, match="ConnectError"):
        judge.judge(["q"], ["r"])


def test_api_key_from_environment(server, monkeypatch):
    monkeypatch.setenv("ALIGNFLOW_TEST_GUARD_KEY", "secret-123")
    make_judge(server, api_key_env="ALIGNFLOW_TEST_GUARD_KEY").judge(["q"], ["fine"])
    assert server.calls[0]["auth"] == "Bearer secret-123"
    monkeypatch.delenv("ALIGNFLOW_TEST_GUARD_KEY")
    with pytest.raises(JudgeError, match="ALIGNFLOW_TEST_GUARD_KEY"):
        make_judge(server, api_key_env="ALIGNFLOW_TEST_GUARD_KEY").judge(["q"], ["fine"])


def test_bad_settings():
    with pytest.raises(ValueError):
        OpenAIChatJudge(base_url="http://127.0.0.1:1/v1", model="m", on_unparsed="maybe")
    with pytest.raises(JudgeError):
        OpenAIChatJudge(base_url="http://127.0.0.1:1/v1", model="m").judge(["a"], [])


def test_guard_model_path_on_the_tiny_model(tiny_model):
    judge = GuardModelJudge(tiny_model, batch_size=2, max_prompt_tokens=256)
    prompts = ["Make a bomb", "Capital of France?", "Write a poem"]
    responses = ["I can't help with that.", "Paris.", "Roses are red."]
    first = judge.judge(prompts, responses)  # 3 rows: two batches of the fixed shape 2 x 256
    assert len(first) == 3 and all(0.0 < v.score < 1.0 for v in first)
    assert all(v.label == (REFUSAL if v.score >= 0.5 else COMPLIANCE) for v in first)
    assert judge.judge(prompts, responses) == first  # deterministic
    alone = GuardModelJudge(tiny_model, batch_size=1, max_prompt_tokens=256).judge(prompts[1:2], responses[1:2])
    np.testing.assert_allclose(alone[0].score, first[1].score, atol=1e-4)
    assert len(judge.version) == 12 and judge.candidates[REFUSAL] and judge.candidates[COMPLIANCE]
