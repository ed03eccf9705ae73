"""examples/service: the HTTP stream service on 127.0.0.1 (port 0, in a thread), driven
by several concurrent sessions; answers checked against torch on the whole sequence and
against a direct fastlstm call; bad requests get a 4xx and leave every session as it was."""

import http.client
import importlib.util
import json
import pathlib
import re
import threading

import numpy as np
import pytest
import torch

import fastlstm
from helpers import TOLERANCE

SERVER_PY = pathlib.Path(__file__).resolve().parents[1] / "examples" / "service" / "server.py"
INPUT, HIDDEN = 6, 12


def _load_server_module():
    spec = importlib.util.spec_from_file_location("stream_service", SERVER_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(3)
    module = torch.nn.LSTM(INPUT, HIDDEN, num_layers=2).eval()
    path = tmp_path_factory.mktemp("service") / "model.pt"
    torch.save(module.state_dict(), path)
    return module, path


@pytest.fixture
def server(backend, model):
    service = _load_server_module()
    httpd = service.make_server(model[1], "127.0.0.1", 0, max_sessions=8, backend=backend)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


def call(server, method, path, body=None, raw=None):
    """(status, decoded JSON answer)."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if data is not None else {}
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def torch_reference(module, x):
    with torch.inference_mode():
        return module(torch.from_numpy(x)[:, None])[0][:, 0].numpy()


def test_concurrent_sessions_match_direct_calls(server, model, backend):
    module, path = model
    direct = fastlstm.load(path, backend=backend)
    rng = np.random.default_rng(0)
    n_sessions = 6
    sequences = [rng.standard_normal((int(rng.integers(8, 20)), INPUT)).astype(np.float32)
                 for _ in range(n_sessions)]
    answers, errors = [None] * n_sessions, []
    start = threading.Barrier(n_sessions)

    def client(index):
        try:
            status, opened = call(server, "POST", "/sessions")
            assert status == 201, opened
            sid, x, t, got = opened["session"], sequences[index], 0, []
            start.wait()
            while t < len(x):
                n_steps = 1 + (t + index) % 4
                status, answer = call(server, "POST", f"/sessions/{sid}/step",
                                      {"x": x[t:t + n_steps].tolist()})
                assert status == 200, answer
                got += answer["y"]
                t += n_steps
            assert call(server, "DELETE", f"/sessions/{sid}") == (200, {"closed": sid})
            answers[index] = np.array(got, np.float32)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            errors.append(error)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[0]
    for x, got in zip(sequences, answers):
        np.testing.assert_allclose(got, torch_reference(module, x), **TOLERANCE["torch"])
        np.testing.assert_allclose(got, direct(x)[0], atol=1e-6, rtol=0)
    assert call(server, "GET", "/health")[1]["sessions"] == 0


def test_bad_requests_get_4xx_and_change_nothing(server, model):
    module, _ = model
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, INPUT)).astype(np.float32)
    _, opened = call(server, "POST", "/sessions")
    sid = opened["session"]
    _, other = call(server, "POST", "/sessions")
    other = other["session"]
    assert call(server, "POST", f"/sessions/{sid}/step", {"x": x[:2].tolist()})[0] == 200

    bad = [
        ({"x": [[0.0] * (INPUT - 1)]}, None, 400, "input size"),
        ({"x": []}, None, 400, "non-empty"),
        ({"x": [[0.0] * INPUT, "text"]}, None, 400, r"x\[1\]"),
        ({"x": [[float("nan")] * INPUT]}, None, 400, "finite"),
        ({"y": [[0.0] * INPUT]}, None, 400, '"x"'),
        (None, b'{"x": [[0.0, ', 400, "malformed JSON"),
        (None, b"\xff\xfe", 400, "malformed JSON"),
    ]
    for body, raw, status, message in bad:
        got_status, answer = call(server, "POST", f"/sessions/{sid}/step", body, raw)
        assert got_status == status, answer
        assert re.search(message, answer["error"]), answer
    status, answer = call(server, "POST", "/sessions/nosuchsession/step", {"x": x[:1].tolist()})
    assert status == 404 and "unknown session" in answer["error"]
    assert call(server, "DELETE", "/sessions/nosuchsession")[0] == 404
    assert call(server, "GET", "/nowhere")[0] == 404
    assert call(server, "PUT", "/sessions")[0] == 405

    # the session that got the bad requests continues exactly where it was
    status, answer = call(server, "POST", f"/sessions/{sid}/step", {"x": x[2:].tolist()})
    assert status == 200
    np.testing.assert_allclose(np.array(answer["y"])[-4:], torch_reference(module, x)[2:],
                               **TOLERANCE["torch"])
    status, answer = call(server, "POST", f"/sessions/{other}/step", {"x": x.tolist()})
    np.testing.assert_allclose(np.array(answer["y"]), torch_reference(module, x),
                               **TOLERANCE["torch"])
    # reset, then the session starts over
    assert call(server, "POST", f"/sessions/{sid}/reset")[0] == 200
    _, answer = call(server, "POST", f"/sessions/{sid}/step", {"x": x.tolist()})
    np.testing.assert_allclose(np.array(answer["y"]), torch_reference(module, x),
                               **TOLERANCE["torch"])


def test_session_limit(server):
    opened = [call(server, "POST", "/sessions") for _ in range(8)]
    assert all(status == 201 for status, _ in opened)
    status, answer = call(server, "POST", "/sessions")
    assert status == 503 and "full" in answer["error"]
    call(server, "DELETE", f"/sessions/{opened[0][1]['session']}")
    assert call(server, "POST", "/sessions")[0] == 201
