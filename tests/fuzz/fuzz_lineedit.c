/* libFuzzer target: the SSH console's line editor, python/zfront/lineedit.py
 * (keys, escape sequences, history, completion, horizontal scrolling),
 * which turns the client's keystrokes into console lines. It is Python, so
 * this target embeds Debian's CPython and runs the real module against a
 * stand-in session object whose read() hands out the input in chunks (as
 * the C session's read() does). libpython is not instrumented, so coverage
 * guidance comes from a C trace function (PyEval_SetTrace) that counts the
 * line-to-line edges executed in lineedit.py into libFuzzer's extra
 * counters, as atheris does.
 *
 * Input layout: byte 0: read() chunk size (1 + byte0 % 64), byte 1: the
 * terminal width (byte1 % 120; 0 means the session reports no size), the
 * rest the client's bytes. Lines are read until EOFError (Ctrl-D, end of
 * input); Ctrl-C (KeyboardInterrupt) abandons a line and reading goes on.
 *
 * Checks: readline returns a str without C0 controls or DEL (the line a
 * console compiles); the cursor stays within the line; the history keeps
 * at most max_history lines and no blank one; everything written to the
 * session is bytes; any other exception than EOFError / KeyboardInterrupt
 * is a failure (invariant [lineedit]). Leak checking is off for this target
 * (the interpreter's own allocations live until exit). */
#include <Python.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef ZF_FUZZ_PYDIR
#error "build.sh passes -DZF_FUZZ_PYDIR=<tree>/python"
#endif

const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "detect_leaks=0";
}

static const char driver[] =
    "import sys\n"
    "from zfront.lineedit import LineEditor\n"
    "class Session:\n"
    "    def __init__(self, data, chunk, cols):\n"
    "        self.data, self.chunk, self.cols, self.pos = data, chunk, cols, 0\n"
    "    def read(self, n=4096):\n"
    "        k = min(n, self.chunk)\n"
    "        d = self.data[self.pos:self.pos + k]\n"
    "        self.pos += len(d)\n"
    "        return d\n"
    "    def write(self, b, stderr=False):\n"
    "        if not isinstance(b, bytes):\n"
    "            raise AssertionError('wrote %r, not bytes' % type(b))\n"
    "    def size(self):\n"
    "        return (self.cols, 24) if self.cols else (0, 0)\n"
    "NAMES = ['print', 'private', 'app', 'apple', 'x' * 90, 'sys.path', 'sys.modules']\n"
    "def complete(text):\n"
    "    return [n for n in NAMES if n.startswith(text)]\n"
    "def run(data):\n"
    "    s = Session(data[2:], 1 + data[0] % 64, data[1] % 120)\n"
    "    ed = LineEditor(s, complete=complete, max_history=5)\n"
    "    for _ in range(len(data) + 2):\n"
    "        try:\n"
    "            line = ed.readline('>>> ' if _ % 2 else '... ')\n"
    "        except KeyboardInterrupt:\n"
    "            continue\n"
    "        except EOFError:\n"
    "            return\n"
    "        if not isinstance(line, str):\n"
    "            raise AssertionError('readline gave %r' % type(line))\n"
    "        bad = [c for c in line if c < ' ' or c == '\\x7f']\n"
    "        if bad:\n"
    "            raise AssertionError('control characters in the line: %r' % line)\n"
    "        if not 0 <= ed.pos <= len(ed.buf):\n"
    "            raise AssertionError('cursor %d outside the line' % ed.pos)\n"
    "        if len(ed.history) > 5 or any(not h.strip() for h in ed.history):\n"
    "            raise AssertionError('history %r' % ed.history)\n"
    "    raise AssertionError('readline returned without consuming input')\n";

static PyObject *run;

/* Python line coverage: edges (previous line, line) inside lineedit.py. */
#define EDGES 4096
__attribute__((section("__libfuzzer_extra_counters"))) static uint8_t edges[EDGES];
static PyObject *editor_file; /* lineedit.py's co_filename (interned str) */
static int prev_line;

static int trace(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    (void)obj;
    (void)arg;
    if (what != PyTrace_LINE && what != PyTrace_CALL)
        return 0;
    PyCodeObject *code = PyFrame_GetCode(frame);
    int ours =
        code->co_filename == editor_file || PyUnicode_Compare(code->co_filename, editor_file) == 0;
    Py_DECREF(code);
    if (!ours)
        return 0;
    int line = PyFrame_GetLineNumber(frame);
    if (what == PyTrace_CALL)
        prev_line = 0;
    edges[((unsigned)prev_line * 7919u + (unsigned)line) % EDGES]++;
    prev_line = line;
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.install_signal_handlers = 0;
    PyStatus st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st))
        Py_ExitStatusException(st);
    PyObject *path = PySys_GetObject("path"); /* borrowed */
    PyObject *dir = PyUnicode_FromString(ZF_FUZZ_PYDIR);
    if (!path || !dir || PyList_Insert(path, 0, dir) != 0)
        abort();
    Py_DECREF(dir);
    PyObject *mod = PyImport_AddModule("__main__"); /* borrowed */
    PyObject *globals = PyModule_GetDict(mod);
    PyObject *r = PyRun_String(driver, Py_file_input, globals, globals);
    if (!r) {
        PyErr_Print();
        abort();
    }
    Py_DECREF(r);
    run = PyDict_GetItemString(globals, "run");
    PyObject *le = PyImport_ImportModule("zfront.lineedit");
    editor_file = le ? PyObject_GetAttrString(le, "__file__") : NULL;
    if (!run || !editor_file)
        abort();
    Py_DECREF(le);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n < 2)
        return 0;
    PyEval_SetTrace(trace, NULL);
    PyObject *b = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)n);
    PyObject *r = b ? PyObject_CallOneArg(run, b) : NULL;
    Py_XDECREF(b);
    PyEval_SetTrace(NULL, NULL);
    if (!r) {
        fprintf(stderr, "\n==== zfront fuzz_lineedit: invariant [lineedit] violated\n");
        PyErr_Print();
        abort();
    }
    Py_DECREF(r);
    return 0;
}
