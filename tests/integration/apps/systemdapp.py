"""The application of test_systemd.py: what the process environment shows,
a ctypes callback (libffi trampolines, MemoryDenyWriteExecute=), and a slow
request that keeps a worker stuck."""
import ctypes
import json
import mmap
import os
import time
import urllib.parse


def _ctypes_callback():
    """qsort through a Python comparison callback: ctypes must build an
    executable trampoline for it."""
    libc = ctypes.CDLL(None)
    cmp_t = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                             ctypes.POINTER(ctypes.c_int))
    arr = (ctypes.c_int * 5)(5, 1, 4, 2, 3)
    libc.qsort(arr, 5, ctypes.sizeof(ctypes.c_int), cmp_t(lambda a, b: a[0] - b[0]))
    return list(arr)


def _wx_mapping_allowed():
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC).close()
        return True
    except OSError:
        return False


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
    if path == "/os-environ":
        body = json.dumps(sorted(os.environ)).encode()
    elif path == "/ctypes":
        body = json.dumps({"sorted": _ctypes_callback(),
                           "wx_allowed": _wx_mapping_allowed()}).encode()
    elif path == "/sleep":
        time.sleep(float(q.get("s", "1")))
        body = b"slept"
    else:
        body = b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
