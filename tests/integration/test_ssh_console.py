"""SSH console: interactive pty sessions driven by paramiko -- prompt,
multi-line input, history, completion, Ctrl-C, several sessions, a client
killed mid-command, and HTTP serving on while console code runs."""
import os
import subprocess

import pytest

from sshtest import (Console, console_threads, keys_fixture,  # noqa: F401
                     start_ssh_server, thread_count)
from zftest import TIMEOUT, wait_until

UP = "\x1b[A"
CTRL_C = "\x03"
CTRL_D = "\x04"

SPIN = "def spin():\r    print('SPIN' + 'NING')\r    while True: pass\r\r"


@pytest.fixture(scope="module")
def srv(module_server_factory, keys):
    return start_ssh_server(module_server_factory, keys, threads=2)


@pytest.fixture
def console(srv, keys):
    c = Console(srv, keys)
    c.expect(">>> ")
    yield c
    c.close()


def test_banner_prompt_and_expression(console):
    assert b"zfront" in console.out and b"Names: app, zfront" in console.out
    out = console.run("6 * 7")
    assert out == b"6 * 7\r\n42\r\n"


def test_multi_line_def_with_continuation_prompt(console):
    console.line("def double(x):")
    console.expect("... ")
    console.line("    return 2 * x")
    console.expect("... ")
    console.line("")
    console.expect(">>> ")
    assert console.run("double(21)") == b"double(21)\r\n42\r\n"


def test_exceptions_show_a_traceback_and_the_session_goes_on(console):
    out = console.run("1/0")
    assert b"ZeroDivisionError" in out
    assert console.run("'still here'").endswith(b"'still here'\r\n")


def test_history_recall_with_the_up_arrow(console):
    console.run("print('HIST' + 'ORY')")
    console.send(UP)
    console.expect("print('HIST' + 'ORY')")  # the line is redrawn
    console.send("\r")
    assert b"HISTORY" in console.expect(">>> ")
    assert console.out.count(b"HISTORY\r\n") == 2


def test_line_editing_keys(console):
    # Each line is only valid Python if the editing key did its job; the
    # redraws contain the prompt, so wait for the result instead.
    console.send("rint('ed'+'it')\x01p\x05\r")  # Ctrl-A, insert, Ctrl-E
    console.expect("\r\nedit\r\n>>> ")
    console.send("garbage\x15print('after'+'-u')\r")  # Ctrl-U
    console.expect("\r\nafter-u\r\n>>> ")
    console.send("print('x'+'y') junk\x17\r")  # Ctrl-W
    console.expect("\r\nxy\r\n>>> ")
    console.send("print('ke'+'pt')XYZ\x1b[D\x1b[D\x1b[D\x0b\r")  # left x3, Ctrl-K
    console.expect("\r\nkept\r\n>>> ")
    console.send("print('b'+'s')Q\x7f\r")  # Backspace
    console.expect("\r\nbs\r\n>>> ")
    console.send("print('ri'+'ght'X)\x1b[D\x1b[D\x1b[C\x08\r")  # left, right, ^H
    console.expect("\r\nright\r\n>>> ")


def test_tab_completes_from_the_live_namespace(console):
    console.run("zz_unique_name = 1234")
    console.send("zz_uniq\t")
    console.expect("zz_unique_name")
    console.send("\r")
    assert console.expect(">>> ").endswith(b"1234\r\n")
    console.send("zfront.__vers\t\r")
    assert console.expect(">>> ").endswith(b"'0.1.0'\r\n")


def test_tab_lists_several_candidates(console):
    console.run("cand_alpha = 1; cand_beta = 2")
    console.send("cand_\t")
    listing = console.expect(">>> cand_")
    assert b"cand_alpha" in listing and b"cand_beta" in listing
    console.send(CTRL_C)
    console.expect(">>> ")


def test_ctrl_c_at_the_prompt_clears_the_line(console):
    console.send("this is not python" + CTRL_C)
    console.expect("^C\r\n>>> ")
    assert console.run("'fresh'").endswith(b"'fresh'\r\n")


def test_ctrl_c_interrupts_running_code_and_returns_to_the_prompt(console):
    console.send(SPIN)
    console.expect(">>> ")
    console.line("spin()")
    console.expect("SPINNING")
    console.send(CTRL_C)
    out = console.expect(">>> ")
    assert b"KeyboardInterrupt" in out
    assert console.run("6 * 7").endswith(b"42\r\n")


def test_ctrl_c_interrupts_code_that_floods_output(console):
    console.line("while True: print('flood' * 20)")
    console.line("")
    console.expect("floodflood")
    console.send(CTRL_C)
    console.expect("KeyboardInterrupt")
    console.expect(">>> ")
    console.run("'sync'")
    assert console.run("6 * 7").endswith(b"42\r\n")


def test_input_reads_a_line_from_the_session(console):
    console.line("name = input('Your name: ')")
    console.expect("Your name: ")
    console.send("Ada\r")
    console.expect(">>> ")
    assert console.run("name").endswith(b"'Ada'\r\n")


def test_window_change_resizes_the_editing_line(console):
    # At 200 columns a 62-character line is echoed as typed...
    wide = "'" + "a" * 60 + "'"
    assert console.run(wide) == (wide + "\r\n" + wide + "\r\n").encode()
    # ...at 30 columns it scrolls horizontally: redrawn from the prompt.
    console.chan.resize_pty(width=30, height=10)
    narrow = "'" + "b" * 60 + "'"
    console.line(narrow)
    echo = console.expect(narrow + "\r\n")  # only the result has it whole
    assert b"\r>>> " in echo
    assert b"b" * 30 not in echo
    console.expect(">>> ")


def test_ctrl_d_ends_the_session(console):
    console.send(CTRL_D)
    assert console.wait_closed()
    assert console.chan.recv_exit_status() == 0


def test_exit_ends_the_session_with_its_status(console):
    console.line("exit(5)")
    assert console.wait_closed()
    assert console.chan.recv_exit_status() == 5


def test_two_sessions_at_once_each_with_its_own_namespace_and_output(srv, keys):
    a, b = Console(srv, keys), Console(srv, keys)
    try:
        a.expect(">>> ")
        b.expect(">>> ")
        a.run("who = 'session-A'")
        b.run("who = 'session-B'")
        # A runs code that never returns; B still answers.
        a.send(SPIN)
        a.expect(">>> ")
        a.line("spin()")
        a.expect("SPINNING")
        assert b.run("who").endswith(b"'session-B'\r\n")
        assert b"session-B" not in a.out
        a.send(CTRL_C)
        assert b"KeyboardInterrupt" in a.expect(">>> ")
        assert a.run("who").endswith(b"'session-A'\r\n")
        assert b"session-A" not in b.out.replace(b"who = 'session-B'", b"")
    finally:
        a.close()
        b.close()


def test_killed_mid_command_leaves_no_thread_or_fd_behind(srv, keys):
    # Sessions of earlier tests may still be ending.
    assert wait_until(lambda: console_threads(srv.pid) == 0, 20)
    baseline = thread_count(srv.pid)
    fds = srv.fd_count()

    c = Console(srv, keys)
    c.expect(">>> ")
    assert console_threads(srv.pid) == 1
    c.send(SPIN)
    c.expect(">>> ")
    c.line("spin()")
    c.expect("SPINNING")
    c.client.get_transport().sock.close()  # the client dies, no goodbye
    c.close()
    assert wait_until(lambda: console_threads(srv.pid) == 0, 20), "console thread still alive"
    assert wait_until(lambda: thread_count(srv.pid) == baseline, 20), \
        "%d threads, %d before" % (thread_count(srv.pid), baseline)
    assert wait_until(lambda: srv.fd_count() == fds, 20)
    # The server still works.
    again = Console(srv, keys)
    try:
        again.expect(">>> ")
        assert again.run("6 * 7").endswith(b"42\r\n")
    finally:
        again.close()


def test_http_keeps_serving_during_a_long_console_command(srv, keys):
    c = Console(srv, keys)
    try:
        c.expect(">>> ")
        c.send(SPIN)
        c.expect(">>> ")
        c.line("spin()")
        c.expect("SPINNING")
        for _ in range(3):
            r = subprocess.run(["curl", "-s", "-m", "30", "-o", "-", "-w", " %{http_code}",
                                srv.url("/hello")], capture_output=True, timeout=60)
            assert r.stdout.endswith(b" 200"), r
        c.send(CTRL_C)
        assert b"KeyboardInterrupt" in c.expect(">>> ")
    finally:
        c.close()


def test_console_does_not_run_on_the_app_workers(srv, keys):
    c = Console(srv, keys)
    try:
        c.expect(">>> ")
        out = c.run("import threading; threading.current_thread().name")
        name = out.split(b"\r\n")[1]
        # the console's own thread, never a worker of the app (those are
        # unnamed "Dummy-N" threads of the "zfront" process)
        assert name.startswith(b"'zf-ssh-console-"), name
        comm = c.run("open('/proc/self/task/%d/comm' % threading.get_native_id()).read()")
        assert comm.split(b"\r\n")[1] == b"'zf-ssh-console\\n'", comm
        ident = c.run("threading.get_ident()").split(b"\r\n")[1]
        c2 = Console(srv, keys)
        try:
            c2.expect(">>> ")
            ident2 = c2.run("import threading; threading.get_ident()").split(b"\r\n")[1]
        finally:
            c2.close()
        assert ident != ident2
    finally:
        c.close()


def test_script_mode_without_pty_via_paramiko(srv, keys):
    from sshtest import connect_paramiko
    client = connect_paramiko(srv, keys)
    try:
        chan = client.get_transport().open_session(timeout=TIMEOUT)
        chan.invoke_shell()
        chan.sendall(b"x = 20\nprint(x + 22)\n")
        chan.shutdown_write()
        out = b""
        while True:
            d = chan.recv(65536)
            if not d:
                break
            out += d
        assert out == b"42\n"
        assert chan.recv_exit_status() == 0
    finally:
        client.close()


def test_client_gone_before_its_script_runs_still_stops_it(server_factory, keys):
    """The client leaves while its script is still being read (no EOF yet):
    the console reads EOF, then runs the script. That code must still be
    interrupted (it was not running when the channel went away)."""
    from sshtest import connect_paramiko
    s = start_ssh_server(server_factory, keys)
    client = connect_paramiko(s, keys)
    try:
        chan = client.get_transport().open_session(timeout=TIMEOUT)
        chan.invoke_shell()  # no pty: stdin is a script, run at EOF
        chan.sendall(b"import time\nwhile True: time.sleep(0.05)\n")
        assert wait_until(lambda: console_threads(s.pid) == 1)
    finally:
        client.close()  # no EOF: the script starts only once the channel is gone
    assert wait_until(lambda: console_threads(s.pid) == 0, 20), "the script runs on"


TSAN_BIN = os.environ.get("ZFRONT_TSAN_BIN")


@pytest.mark.tsan
def test_console_output_hand_off_has_no_data_race(server_factory, keys, monkeypatch, tmp_path):
    """The console thread appends output while the loop sends it: every
    access to the shared queue must be ordered by the lock. ThreadSanitizer
    sees the unordered ones even when they happen to do no harm. Selected
    only by `make test-tsan` (conftest deselects `tsan` tests elsewhere)."""
    assert TSAN_BIN, "ZFRONT_TSAN_BIN must name a ThreadSanitizer build of zfront"
    from sshtest import ssh
    monkeypatch.setenv("ZFRONT_BIN", TSAN_BIN)
    logs = tmp_path / "tsan"
    s = start_ssh_server(server_factory, keys,
                         env={"TSAN_OPTIONS": "halt_on_error=0 exitcode=0 log_path=%s" % logs})
    code = "import sys\nfor i in range(20000): sys.stdout.write('x' * 50 + '\\n')\n"
    for _ in range(3):
        r = ssh(s, keys, code, timeout=120)
        assert (r.returncode, len(r.stdout)) == (0, 20000 * 51), r.stderr
    assert s.stop() == 0
    reports = ""
    for path in tmp_path.glob("tsan*"):
        reports += path.read_text(errors="replace")
    ours = [r for r in reports.split("WARNING: ThreadSanitizer")[1:]
            if "proto/ssh/console" in r]
    assert ours == [], ours[0][:3000]
