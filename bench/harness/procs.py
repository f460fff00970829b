"""Child processes of the harness: started in their own session, stopped by PID.

Every server and client the harness starts goes through spawn(), which puts
it in a new session (so its process group id is its PID and a Ctrl-C on the
terminal reaches only the harness) and records it. stop() signals that PID,
waits, then SIGKILLs the process group named by that same PID, which also
takes any worker processes the server forked. stop_all() is called from the
harness's `finally` and from its SIGTERM/SIGHUP handler, so nothing is left
running after an error or an interrupt.
"""

import os
import signal
import subprocess
import time

_live = {}  # pid -> Popen


def spawn(argv, env=None, cwd=None, log=None, stdout=None):
    """Starts argv in a new session. Output goes to the file `log` (path) or `stdout`."""
    out = open(log, "ab") if log else stdout
    try:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT if log else None,
                                start_new_session=True)
    finally:
        if log:
            out.close()
    _live[proc.pid] = proc
    return proc


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop(proc, sig=signal.SIGTERM, grace=10.0):
    """Stops proc: `sig` to its PID, up to `grace` seconds, then SIGKILL to its group.

    Returns the exit status of the PID (None if it had to be killed). Waits
    until no process of the group is left (bounded: 5 s after SIGKILL)."""
    status = proc.poll()
    if status is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            status = proc.wait(grace)
        except subprocess.TimeoutExpired:
            status = None
    deadline = time.monotonic() + grace
    while _group_alive(proc.pid) and time.monotonic() < deadline and status is not None:
        time.sleep(0.05)  # forked workers finishing their own graceful exit
    if _group_alive(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    end = time.monotonic() + 5
    while _group_alive(proc.pid) and time.monotonic() < end:
        time.sleep(0.05)
    _live.pop(proc.pid, None)
    return status


def stop_all():
    """Kills everything still registered (error and interrupt path)."""
    for proc in list(_live.values()):
        stop(proc, signal.SIGKILL, grace=2.0)


def live():
    return list(_live.values())
