#!/usr/bin/env python3
"""A real HTTP server on loopback that misbehaves the ways OpenAI-compatible servers do, for
tests/test_llm_openai.c (the well-behaved server is `colobench serve`).

Usage: oai_fault_server.py LOGFILE   -> binds 127.0.0.1:0, prints "READY <port>" and serves.
The first path segment picks the behaviour; the rest is the OpenAI path (/v1/completions):
  /e500/...   HTTP 500 with a JSON error body naming "boom"
  /slow/...   one chunk, then a chunk every 5 s (a client timeout ends it)
  /cut/...    two chunks, then the connection closes without [DONE]
  /bad/...    an event whose data is not JSON
  /hang/...   one chunk, then nothing (the test kills this process mid-stream)
  /slowok/... waits 1 s, then a complete stream of 4 chunks with usage
  /auth/...   401 unless "Authorization: Bearer $CB_TEST_OAI_KEY", else a complete stream
  /kaclose/.. an HTTP/1.1 JSON completion with Content-Length and no "Connection: close", then
              the connection closes anyway (a client that reuses it must start over)
  /emb/...    an embeddings response (/v1/embeddings) whose usage counts the input
  /chunky/... an HTTP/1.1 chunked stream written a few bytes at a time, with chunk extensions
              and a trailer, then the connection closes (as /kaclose)
Every request appends one line to LOGFILE when it arrives.
"""
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def chunk(text, finish=None):
    return {"id": "cmpl-f", "object": "text_completion", "created": 1, "model": "fault",
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # bodies end at the close

    def log_message(self, *args):
        pass

    def event(self, obj):
        data = obj if isinstance(obj, str) else json.dumps(obj)
        self.wfile.write(("data: " + data + "\n\n").encode())
        self.wfile.flush()

    def start_stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

    def full_stream(self, n=4):
        self.start_stream()
        for i in range(n):
            self.event(chunk(" t%d" % i, "length" if i == n - 1 else None))
        self.event({"id": "cmpl-f", "object": "text_completion", "created": 1, "model": "fault",
                    "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": n,
                                             "total_tokens": n + 3}})
        self.event("[DONE]")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        json.loads(body)  # the client must send JSON
        with open(sys.argv[1], "a") as f:
            f.write(self.path + "\n")
        mode = self.path.split("/")[1]
        try:
            if mode == "e500":
                msg = json.dumps({"error": {"message": "boom: the model crashed",
                                            "type": "internal_error"}}).encode()
                self.send_response(500)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)
            elif mode == "slow":
                self.start_stream()
                for i in range(100):
                    self.event(chunk(" s"))
                    time.sleep(5)
            elif mode == "cut":
                self.start_stream()
                self.event(chunk(" a"))
                self.event(chunk(" b"))
            elif mode == "bad":
                self.start_stream()
                self.event("{not json")
            elif mode == "hang":
                self.start_stream()
                self.event(chunk(" h"))
                time.sleep(3600)
            elif mode == "slowok":
                time.sleep(1)
                self.full_stream()
            elif mode == "auth":
                want = "Bearer " + os.environ.get("CB_TEST_OAI_KEY", "")
                if self.headers.get("Authorization") != want:
                    msg = b'{"error": {"message": "bad key"}}'
                    self.send_response(401)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                else:
                    self.full_stream()
            elif mode == "emb":
                req = json.loads(body)
                n = len(req["input"]) if isinstance(req["input"], list) else len(req["input"].split())
                msg = json.dumps({"object": "list", "model": "fault",
                                  "data": [{"object": "embedding", "index": 0,
                                            "embedding": [0.25, -0.5, 0.125]}],
                                  "usage": {"prompt_tokens": n, "total_tokens": n}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)
            elif mode == "kaclose":
                body = json.dumps({"id": "cmpl-k", "object": "text_completion", "created": 1,
                                   "model": "fault",
                                   "choices": [{"index": 0, "text": " k", "logprobs": None,
                                                "finish_reason": "length"}],
                                   "usage": {"prompt_tokens": 4, "completion_tokens": 3,
                                             "total_tokens": 7}}).encode()
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
                self.wfile.flush()
            elif mode == "chunky":
                events = []
                for i in range(4):
                    events.append("data: " + json.dumps(chunk(" c%d" % i, "length" if i == 3 else None)) + "\n\n")
                events.append("data: " + json.dumps({"id": "cmpl-f", "object": "text_completion",
                                                     "created": 1, "model": "fault", "choices": [],
                                                     "usage": {"prompt_tokens": 4,
                                                               "completion_tokens": 4,
                                                               "total_tokens": 8}}) + "\n\n")
                events.append("data: [DONE]\n\n")
                wire = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" \
                       b"Transfer-Encoding: chunked\r\n\r\n"
                for k, ev in enumerate(events):
                    data = ev.encode()
                    ext = b";note=x" if k % 2 else b""
                    wire += b"%x%s\r\n%s\r\n" % (len(data), ext, data)
                wire += b"0\r\nX-Trailer: t\r\n\r\n"
                i, size = 0, 1
                while i < len(wire):  # pieces of 1 to 7 bytes, each its own write
                    self.wfile.write(wire[i:i + size])
                    self.wfile.flush()
                    i += size
                    size = size % 7 + 1
            else:
                self.send_response(404)
                self.end_headers()
        except (BrokenPipeError, ConnectionResetError):
            pass


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    print("READY %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
