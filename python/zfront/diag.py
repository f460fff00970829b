"""Diagnostics the C core asks for (SIGUSR1, see docs/operations.md).

``all_stacks(names)`` formats the Python stack of every thread that runs
Python code now; ``names`` maps a thread ident to what the core calls it
("worker 2"), for threads the ``threading`` module does not know by name.
"""

import sys
import threading
import traceback

__all__ = ["all_stacks"]


def all_stacks(names):
    known = {t.ident: t.name for t in threading.enumerate()}
    me = threading.get_ident()
    parts = []
    for ident, frame in sorted(sys._current_frames().items()):
        if ident == me:
            continue  # this dump itself
        name = names.get(ident) or known.get(ident) or "thread"
        stack = "".join(traceback.format_stack(frame))
        parts.append(f"--- {name} (ident {ident}):\n{stack}")
    if not parts:
        return "no thread runs Python code\n"
    return "".join(parts)
