"""A small HTTP service streaming a recurrent model: one fastlstm Stream per client session.

    python examples/service/server.py model.pt --port 8000

Requests and answers are JSON (see README.md):
    POST   /sessions              -> 201 {"session": id}
    POST   /sessions/<id>/step    {"x": [[I floats], ...]} -> 200 {"y": [[H_out floats], ...]}
    POST   /sessions/<id>/reset   -> 200 {"session": id}
    DELETE /sessions/<id>         -> 200 {"closed": id}
    GET    /health                -> 200 {"model": ..., "input_size": I, "output_size": H_out, ...}
Errors are 4xx (5xx for a full server) with {"error": message}; a bad request never
changes any session's state.

Standard library only (http.server.ThreadingHTTPServer): one thread per connection.
fastlstm kernels release the GIL, so sessions stepping at the same time run in
parallel.  A Stream serves one caller at a time, so each session has a lock:
concurrent requests for one session queue up instead of failing.
"""

import argparse
import json
import math
import secrets
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

import fastlstm

MAX_BODY_BYTES = 1 << 20    # a step request's JSON
MAX_STEPS_PER_REQUEST = 4096


class RequestError(Exception):
    """A client error: HTTP status and message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class _Session:
    __slots__ = ("stream", "lock")

    def __init__(self, stream):
        self.stream = stream
        self.lock = threading.Lock()  # one request of this session at a time


class StreamService:
    """The model and the open sessions; the HTTP handler calls these methods."""

    def __init__(self, layer, max_sessions=1000):
        if not hasattr(layer, "stream"):
            raise ValueError(f"the service streams sequence layers (LSTM, GRU, RNN); "
                             f"the checkpoint holds a {type(layer).__name__}")
        layer.stream()  # fails now, not at the first client, if the layer cannot stream
        self.layer = layer
        self.max_sessions = max_sessions
        self.output_size = layer.proj_size or layer.hidden_size
        self._sessions = {}
        self._lock = threading.Lock()  # guards the sessions dict only

    def open(self):
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE,
                                   f"the server is full: {self.max_sessions} sessions are open; "
                                   "close one or retry later")
            session_id = secrets.token_hex(8)
            self._sessions[session_id] = _Session(self.layer.stream())
        return session_id

    def close(self, session_id):
        with self._lock:
            if self._sessions.pop(session_id, None) is None:
                raise self._unknown(session_id)

    def step(self, session_id, body):
        x = self._features(body)  # validated before the session is touched
        session = self._get(session_id)
        with session.lock:
            return session.stream(x)  # (T, H_out) float32

    def reset(self, session_id):
        session = self._get(session_id)
        with session.lock:
            session.stream.reset()

    def health(self):
        return {"model": repr(self.layer), "input_size": self.layer.input_size,
                "output_size": self.output_size, "sessions": len(self._sessions),
                "max_sessions": self.max_sessions}

    def _get(self, session_id):
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise self._unknown(session_id)
        return session

    @staticmethod
    def _unknown(session_id):
        return RequestError(HTTPStatus.NOT_FOUND,
                            f"unknown session {session_id!r} (never opened, or closed)")

    def _features(self, body):
        """{"x": [[I numbers], ...]} -> (T, I) float32."""
        if not isinstance(body, dict) or "x" not in body:
            raise RequestError(HTTPStatus.BAD_REQUEST,
                               'expected a JSON object {"x": [[feature, ...], ...]}')
        rows, size = body["x"], self.layer.input_size
        if not isinstance(rows, list) or not rows:
            raise RequestError(HTTPStatus.BAD_REQUEST,
                               "x: expected a non-empty list of feature vectors")
        if len(rows) > MAX_STEPS_PER_REQUEST:
            raise RequestError(HTTPStatus.BAD_REQUEST,
                               f"x: at most {MAX_STEPS_PER_REQUEST} steps per request, "
                               f"got {len(rows)}")
        for t, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != size:
                got = f"length {len(row)}" if isinstance(row, list) else type(row).__name__
                raise RequestError(HTTPStatus.BAD_REQUEST,
                                   f"x[{t}]: expected a list of {size} numbers (the model's "
                                   f"input size), got {got}")
            for value in row:
                if (isinstance(value, bool) or not isinstance(value, (int, float))
                        or not math.isfinite(value)):
                    raise RequestError(HTTPStatus.BAD_REQUEST,
                                       f"x[{t}]: expected finite numbers, got {value!r}")
        return np.asarray(rows, dtype=np.float32)


class Handler(BaseHTTPRequestHandler):
    """Routes requests to ``self.server.service``; every answer is JSON."""

    server_version = "fastlstm-stream-service/0.1"

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def _dispatch(self, method):
        service = self.server.service
        parts = [part for part in self.path.split("?")[0].split("/") if part]
        try:
            if parts == ["health"] and method == "GET":
                return self._answer(HTTPStatus.OK, service.health())
            if parts[:1] != ["sessions"]:
                raise RequestError(HTTPStatus.NOT_FOUND, f"no such resource: {self.path}")
            if parts == ["sessions"] and method == "POST":
                return self._answer(HTTPStatus.CREATED, {"session": service.open()})
            if len(parts) == 2 and method == "DELETE":
                service.close(parts[1])
                return self._answer(HTTPStatus.OK, {"closed": parts[1]})
            if len(parts) == 3 and parts[2] == "step" and method == "POST":
                y = service.step(parts[1], self._json_body())
                return self._answer(HTTPStatus.OK, {"y": y.tolist()})
            if len(parts) == 3 and parts[2] == "reset" and method == "POST":
                service.reset(parts[1])
                return self._answer(HTTPStatus.OK, {"session": parts[1]})
            raise RequestError(HTTPStatus.NOT_FOUND if method == "GET" else
                               HTTPStatus.METHOD_NOT_ALLOWED,
                               f"{method} {self.path} is not a request this service answers")
        except RequestError as error:
            self._answer(error.status, {"error": str(error)})

    def _json_body(self):
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        try:
            length = int(length)
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, "Content-Length: not an integer") from None
        if length > MAX_BODY_BYTES:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"the body is {length} bytes; at most {MAX_BODY_BYTES}")
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"malformed JSON: {error}") from None

    def _answer(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # quiet unless asked (see --verbose)
        if self.server.verbose:
            super().log_message(format, *args)


def make_server(checkpoint, host="127.0.0.1", port=8000, *, max_sessions=1000,
                backend="auto", prefix=None, verbose=False):
    """A ThreadingHTTPServer streaming the recurrent module of ``checkpoint``
    (a path or state dict ``fastlstm.load`` reads); call ``serve_forever()`` on it."""
    layer = fastlstm.load(checkpoint, prefix, backend=backend)
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.service = StreamService(layer, max_sessions)
    server.verbose = verbose
    return server


def main(argv=None):
    parser = argparse.ArgumentParser(description="Stream a recurrent model over HTTP.")
    parser.add_argument("checkpoint", help="a checkpoint fastlstm.load reads (.pt, .safetensors, .npz)")
    parser.add_argument("--prefix", default=None, help="the module's key prefix, if several")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-sessions", type=int, default=1000)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    server = make_server(args.checkpoint, args.host, args.port, max_sessions=args.max_sessions,
                         backend=args.backend, prefix=args.prefix, verbose=args.verbose)
    host, port = server.server_address[:2]
    print(f"serving {server.service.layer!r} on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
