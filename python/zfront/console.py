"""The SSH console: an admin's Python REPL inside the running instance.

The C side (src/proto/ssh/) authenticates the client, starts one thread
per session with its own Python thread state, and calls ``run()`` here on
that thread with a ``session`` object:

  session.read(max=4096)  -> bytes from the client; b'' at EOF; None when
                             an interrupt woke the wait (the GIL is
                             released while it waits)
  session.write(data, stderr=False)   bytes to the client (waits while the
                             client is slow; BrokenPipeError once it left)
  session.set_busy(flag)  user code runs: Ctrl-C becomes KeyboardInterrupt
  session.size()          (columns, rows) of the client's terminal
  session.closed()        True once the client went away

Modes: "pty" (pty-req + shell) is the interactive console with line
editing, history and completion (zfront.lineedit); "exec" runs the
command text; "script" (shell without a pty) reads stdin to its end and
runs it. exec and script exit with status 0, or 1 on an uncaught exception
(the traceback goes to the client's stderr), or the SystemExit code.

The namespace comes from ``[ssh] namespace = "module:function"`` when set
(see docs/protocols/ssh.md): the function is called once per session with a
``SessionInfo`` and returns a dict, or is a generator that yields the dict
and cleans up after the session (Zope: a fresh ZODB connection, then
``transaction.abort()`` and ``close()``). Without it the namespace holds
``app`` (the loaded WSGI application), ``zfront`` and, for the bundled
demo, ``site`` (its content root).

sys.stdout, sys.stderr, sys.stdin and sys.displayhook are process-wide;
the first console replaces them with forwarders that send a console
thread's I/O to its own session and everything else where it went before.
"""

import builtins
import code
import importlib
import io
import pydoc
import sys
import threading
import traceback
import types

from zfront.lineedit import LineEditor

# rlcompleter imports GNU readline when it can, which installs a process-wide
# completer and may touch the server's own terminal. The console needs
# neither: hide readline during that one import.
if "readline" in sys.modules:
    import rlcompleter
else:
    sys.modules["readline"] = None
    try:
        import rlcompleter
    finally:
        del sys.modules["readline"]

__all__ = ["run", "SessionInfo"]

MAX_SCRIPT = 64 * 1024 * 1024

# thread ident -> _Streams of the console running on that thread
_sessions = {}
_install_lock = threading.Lock()


class SessionInfo:
    """What a namespace hook learns about the session."""

    def __init__(self, user, peer, mode, app, conn_id):
        self.user = user  # the SSH user name the client gave
        self.peer = peer  # "addr:port" of the client
        self.mode = mode  # "pty", "exec" or "script"
        self.app = app  # the loaded WSGI application (or None)
        self.conn_id = conn_id

    def __repr__(self):
        return "<SessionInfo %s@%s %s>" % (self.user, self.peer, self.mode)


# ---------------------------------------------------------------- streams


class _Out(io.TextIOBase):
    """A session's stdout or stderr. On a pty, "\\n" becomes "\\r\\n"."""

    def __init__(self, session, stderr, pty):
        self._session = session
        self._stderr = stderr
        self._pty = pty
        self.partial = ""  # text after the last newline: input()'s prompt

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "replace"

    def writable(self):
        return True

    def isatty(self):
        return self._pty

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        if s:
            data = s.replace("\n", "\r\n") if self._pty else s
            self._session.write(data.encode("utf-8", "replace"), stderr=self._stderr)
            i = s.rfind("\n")
            self.partial = (self.partial + s if i < 0 else s[i + 1:])[-200:]
        return len(s)

    def flush(self):
        pass

    @property
    def buffer(self):
        return _OutBytes(self)


class _OutBytes(io.RawIOBase):
    """sys.stdout.buffer of a session: bytes go out as they are (CRLF on a
    pty, like the text stream)."""

    def __init__(self, out):
        self._out = out

    def writable(self):
        return True

    def write(self, b):
        data = bytes(b)
        if data:
            if self._out._pty:
                data = data.replace(b"\n", b"\r\n")
            self._out._session.write(data, stderr=self._out._stderr)
        return len(b)


class _InBytes(io.RawIOBase):
    """sys.stdin.buffer of a session without a pty: the raw input bytes."""

    def __init__(self, inp):
        self._in = inp

    def readable(self):
        return True

    def readinto(self, b):
        if not self._in._buf and not self._in._more():
            return 0
        n = min(len(b), len(self._in._buf))
        b[:n] = self._in._buf[:n]
        self._in._buf = self._in._buf[n:]
        return n

    def read(self, size=-1):
        if size is None or size < 0:
            while self._in._more():
                pass
            data, self._in._buf = self._in._buf, b""
            return data
        return super().read(size)


class _In(io.TextIOBase):
    """A session's stdin: the line editor on a pty, raw input otherwise."""

    def __init__(self, session, editor, stdout):
        self._session = session
        self._editor = editor
        self._stdout = stdout
        self._buf = b""
        self._eof = False

    @property
    def encoding(self):
        return "utf-8"

    def readable(self):
        return True

    def isatty(self):
        return self._editor is not None

    def _more(self):
        while not self._eof:
            data = self._session.read(65536)
            if data is None:
                continue
            if not data:
                self._eof = True
                return False
            self._buf += data
            return True
        return False

    @property
    def buffer(self):
        if self._editor is not None:
            raise AttributeError("a terminal session has no binary stdin")
        return _InBytes(self)

    def readline(self, size=-1):
        if self._editor is not None:
            prompt, self._stdout.partial = self._stdout.partial, ""
            try:
                return self._editor.readline(prompt, add_history=False, shown=True) + "\n"
            except EOFError:
                return ""
        while b"\n" not in self._buf and self._more():
            pass
        i = self._buf.find(b"\n")
        n = len(self._buf) if i < 0 else i + 1
        if size is not None and size >= 0:
            n = min(n, size)
        line, self._buf = self._buf[:n], self._buf[n:]
        return line.decode("utf-8", "replace")

    def read(self, size=-1):
        if self._editor is not None:
            return self.readline()
        while (size is None or size < 0 or len(self._buf) < size) and self._more():
            pass
        n = len(self._buf) if size is None or size < 0 else size
        data, self._buf = self._buf[:n], self._buf[n:]
        return data.decode("utf-8", "replace")


class _Streams:
    def __init__(self, session, pty, editor, namespace):
        self.stdout = _Out(session, False, pty)
        self.stderr = _Out(session, True, pty)
        self.stdin = _In(session, editor, self.stdout)
        self.namespace = namespace


class _Forward:
    """Stands in for sys.stdout/stderr/stdin: a console thread's calls go
    to its session, every other thread's to the previous stream."""

    def __init__(self, name, fallback):
        self._name = name
        self._fallback = fallback

    def _target(self):
        s = _sessions.get(threading.get_ident())
        if s is not None:
            return getattr(s, self._name)
        return self._fallback

    def write(self, s):
        t = self._target()
        return t.write(s) if t is not None else len(s)

    def flush(self):
        t = self._target()
        if t is not None:
            t.flush()

    def __getattr__(self, name):
        t = self._target()
        if t is None:
            raise AttributeError(name)
        return getattr(t, name)

    def __iter__(self):
        return iter(self._target())


def _displayhook(value):
    """sys.displayhook: in a console, prints to the session and sets ``_``
    in the session's namespace (not in builtins, which the app shares)."""
    s = _sessions.get(threading.get_ident())
    if s is None:
        return _displayhook.fallback(value)
    if value is None:
        return
    s.namespace["_"] = None
    s.stdout.write(repr(value) + "\n")
    s.namespace["_"] = value


def _install():
    with _install_lock:
        for name in ("stdout", "stderr", "stdin"):
            cur = getattr(sys, name)
            if not isinstance(cur, _Forward):
                setattr(sys, name, _Forward(name, cur))
        if sys.displayhook is not _displayhook:
            _displayhook.fallback = sys.displayhook
            sys.displayhook = _displayhook


# -------------------------------------------------------------- namespace


class _Quitter:
    """exit()/quit() that end the session (the site module's version would
    close the process's stdin)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return "Use %s() or Ctrl-D to end the session" % self.name

    def __call__(self, code=None):
        raise SystemExit(code)


class _Help:
    """help() that writes to the session instead of a pager."""

    def __repr__(self):
        return "Type help(object) for help about object."

    def __call__(self, *args, **kwds):
        helper = pydoc.Helper(input=sys.stdin, output=sys.stdout)
        return helper(*args, **kwds)


def _default_namespace(app):
    import zfront

    ns = {"app": app, "zfront": zfront}
    try:
        from zfront.demo import DemoApp
    except Exception:
        DemoApp = None
    if DemoApp is not None and isinstance(app, DemoApp):
        from zfront.demo import content

        ns["site"] = content.site_for(app)
    return ns


def _resolve(spec):
    module_name, _, attr = spec.partition(":")
    obj = importlib.import_module(module_name.strip())
    for part in attr.strip().split("."):
        obj = getattr(obj, part)
    return obj


def _build_namespace(hook, info):
    """Returns (namespace dict, cleanup callable or None)."""
    ns = {"__name__": "__console__", "__doc__": None, "__builtins__": builtins}
    cleanup = None
    if hook:
        result = _resolve(hook)(info)
        if isinstance(result, types.GeneratorType):
            gen = result
            extra = next(gen)

            def cleanup():
                try:
                    next(gen)
                except StopIteration:
                    pass
                finally:
                    gen.close()

        else:
            extra = result
        if not isinstance(extra, dict):
            raise TypeError("ssh namespace hook %s must give a dict, not %s"
                            % (hook, type(extra).__name__))
        ns.update(extra)
    else:
        ns.update(_default_namespace(info.app))
    ns.setdefault("exit", _Quitter("exit"))
    ns.setdefault("quit", _Quitter("quit"))
    ns.setdefault("help", _Help())
    return ns, cleanup


# ------------------------------------------------------------------ modes


class _Console(code.InteractiveConsole):
    """compile_command semantics; marks the session busy while code runs,
    so Ctrl-C interrupts it."""

    def __init__(self, session, namespace):
        super().__init__(namespace, filename="<console>")
        self.session = session

    def runcode(self, code_obj):
        self.session.set_busy(True)
        try:
            exec(code_obj, self.locals)
        except SystemExit:
            raise
        except BaseException:
            self.showtraceback()
        finally:
            self.session.set_busy(False)


def _names(ns):
    names = sorted(k for k in ns if not k.startswith("_") and k not in ("exit", "quit", "help"))
    return ", ".join(names) if names else "(empty)"


def _interact(session, ns, editor, streams, info):
    import zfront

    console = _Console(session, ns)
    completer = rlcompleter.Completer(ns)

    def complete(text):
        out = []
        for state in range(1000):
            try:
                m = completer.complete(text, state)
            except Exception:
                break
            if m is None:
                break
            out.append(m)
        return out

    editor.complete = complete
    streams.stdout.write(
        "zfront %s console, Python %s\n"
        "Logged in as %s from %s. Names: %s.\n"
        "Ctrl-C interrupts, Ctrl-D on an empty line ends the session.\n"
        % (getattr(zfront, "__version__", "?"), sys.version.split()[0], info.user, info.peer,
           _names(ns))
    )
    more = False
    while True:
        session.set_busy(False)
        try:
            line = editor.readline("... " if more else ">>> ")
        except KeyboardInterrupt:
            console.resetbuffer()
            more = False
            continue
        except EOFError:
            return 0
        try:
            more = console.push(line)
        except SystemExit as e:
            return _exit_code(e)
        except KeyboardInterrupt:
            streams.stderr.write("\nKeyboardInterrupt\n")
            console.resetbuffer()
            more = False


def _exit_code(e):
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code & 0xFF
    try:
        sys.stderr.write(str(e.code) + "\n")
    except Exception:
        pass
    return 1


def _run_source(session, ns, source, filename):
    """Runs source as a program. A lone expression's value is printed (as
    `ssh host '1+1'` would expect). Returns the exit status."""
    try:
        try:
            code_obj, is_expr = compile(source, filename, "eval"), True
        except SyntaxError:
            code_obj, is_expr = compile(source, filename, "exec"), False
    except (SyntaxError, ValueError, OverflowError):
        traceback.print_exc(limit=0)
        return 1
    session.set_busy(True)
    try:
        value = eval(code_obj, ns)
        if is_expr and value is not None:
            sys.stdout.write(repr(value) + "\n")
        return 0
    except SystemExit as e:
        return _exit_code(e)
    except BaseException:
        if session.closed():
            return 1
        exc_type, exc, tb = sys.exc_info()
        sys.stderr.write("".join(traceback.format_exception(exc_type, exc, tb.tb_next)))
        return 1
    finally:
        session.set_busy(False)


def _read_script(session):
    chunks, size = [], 0
    while True:
        data = session.read(65536)
        if data is None:
            continue
        if not data:
            break
        size += len(data)
        if size > MAX_SCRIPT:
            raise ValueError("the script is larger than %d bytes" % MAX_SCRIPT)
        chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")


# ------------------------------------------------------------- the entry


def run(session, mode, command=None, user="", term="", peer="", namespace=None, conn_id=0,
        app=None, pty=None):
    """Runs one console session on the calling (console) thread. Returns
    the exit status for the client. `pty`: the client has a terminal (an
    exec with `ssh -t` too): output lines end in CRLF, Ctrl-C interrupts."""
    _install()
    if pty is None:
        pty = mode == "pty"
    editor = LineEditor(session) if pty else None
    info = SessionInfo(user, peer, mode, app, conn_id)
    ident = threading.get_ident()
    # Named, so that code (and tracebacks, logging) can tell a console
    # thread from the app's workers; the OS thread is "zf-ssh-console".
    threading.current_thread().name = "zf-ssh-console-%d" % conn_id
    streams = _Streams(session, pty, editor, {})
    _sessions[ident] = streams
    cleanup = None
    try:
        try:
            ns, cleanup = _build_namespace(namespace, info)
        except BaseException:
            if not session.closed():
                sys.stderr.write("zfront: the console namespace could not be built:\n")
                sys.stderr.write(traceback.format_exc())
            raise
        streams.namespace = ns
        if mode == "pty":
            return _interact(session, ns, editor, streams, info)
        if mode == "exec":
            return _run_source(session, ns, command or "", "<ssh>")
        try:
            source = _read_script(session)
        except ValueError as e:
            sys.stderr.write("zfront: %s\n" % e)
            return 1
        return _run_source(session, ns, source, "<stdin>")
    except BrokenPipeError:
        return 1  # the client left while we wrote
    except KeyboardInterrupt:
        return 1  # interrupted outside user code (the client left)
    finally:
        try:
            if cleanup is not None:
                cleanup()
        except Exception:
            if not session.closed():
                sys.stderr.write(traceback.format_exc())
        finally:
            _sessions.pop(ident, None)
            # the _DummyThread made above would stay in threading's table
            # after this thread is gone (its ident may be reused)
            with threading._active_limbo_lock:
                threading._active.pop(ident, None)
