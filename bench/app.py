"""The one WSGI application that every server in the benchmark runs.

Every server (zfront and each peer) loads this same file with the same
environment, so the only difference measured is the server.

Routes:
  /hello   13 bytes, "Hello, world!"
  /blob    the benchmark file through environ["wsgi.file_wrapper"], with
           Content-Length (the PEP 3333 fallback below is used only by a
           server that offers no file_wrapper, e.g. Twisted)
  /gen     the same file from a plain generator yielding 256 KiB chunks, as
           when a middleware hides the file from the server; same headers
  /upload  reads the whole request body in 1 MiB reads and answers with the
           number of bytes it read (the harness checks that number)
  /sleep   sleeps ?s= seconds (default 5) in the worker, then answers: a stuck
           worker for bench/overload.py

The file's path comes from the ZF_BENCH_FILE environment variable, set by
bench/run for every server it starts.
"""

import os
import time

BLOB_PATH = os.environ.get("ZF_BENCH_FILE", "")
CHUNK = 256 * 1024
READ_SIZE = 1024 * 1024
HELLO = b"Hello, world!"


class FallbackFileWrapper:
    """PEP 3333's sample file wrapper, for servers without wsgi.file_wrapper."""

    def __init__(self, filelike, blksize=CHUNK):
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

    def close(self):
        self.filelike.close()


def generate(path):
    """Yields the file in CHUNK-sized pieces: a body the server cannot see as a file."""
    with open(path, "rb") as f:
        while True:
            data = f.read(CHUNK)
            if not data:
                return
            yield data


def blob_headers(size):
    return [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]


def read_body(environ):
    """Reads the whole request body; returns the number of bytes read."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    remaining = int(length) if length.isdigit() else None
    total = 0
    while remaining is None or remaining > 0:
        want = READ_SIZE if remaining is None else min(READ_SIZE, remaining)
        data = stream.read(want)
        if not data:
            break
        total += len(data)
        if remaining is not None:
            remaining -= len(data)
    return total


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(HELLO)))])
        return [HELLO]
    if path == "/blob":
        f = open(BLOB_PATH, "rb")
        start_response("200 OK", blob_headers(os.fstat(f.fileno()).st_size))
        wrapper = environ.get("wsgi.file_wrapper", FallbackFileWrapper)
        return wrapper(f, CHUNK)
    if path == "/gen":
        start_response("200 OK", blob_headers(os.path.getsize(BLOB_PATH)))
        return generate(BLOB_PATH)
    if path == "/sleep":
        q = environ.get("QUERY_STRING", "")
        secs = float(q[2:]) if q.startswith("s=") else 5.0
        time.sleep(min(secs, 60.0))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"slept"]
    if path == "/upload":
        body = str(read_body(environ)).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    body = b"not found"
    start_response("404 Not Found", [("Content-Type", "text/plain"),
                                     ("Content-Length", str(len(body)))])
    return [body]
