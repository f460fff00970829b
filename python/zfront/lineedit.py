"""A small line editor for the SSH console (the equivalent of libedit).

It runs on the console's own thread and talks to the client's terminal
through the C session object: ``session.read()`` gives raw keystrokes (the
GIL is released while it waits), ``session.write()`` sends bytes. The
client's terminal is in raw mode (an SSH pty), so the editor echoes,
handles the keys below and redraws the line itself:

  left/right, Ctrl-B/Ctrl-F   move          Home/End, Ctrl-A/Ctrl-E  line ends
  Alt-B/Alt-F, Ctrl-left/right  by words    Backspace, Delete, Ctrl-D  delete
  Ctrl-U / Ctrl-K   kill to start / end      Ctrl-W  kill the word before
  Ctrl-Y  yank the last kill                 Ctrl-L  clear the screen
  up/down, Ctrl-P/Ctrl-N  history            Tab     completion (or indent)
  Ctrl-C  abandon the line (KeyboardInterrupt)
  Ctrl-D  on an empty line: end of input (EOFError)

A line longer than the terminal scrolls horizontally (readline's
horizontal-scroll-mode), so the editor never depends on how the terminal
wraps; the width follows window-change requests.
"""

import codecs
import os
import re

__all__ = ["LineEditor"]

_WORD_TAIL = re.compile(r"[\w.]*$")


class LineEditor:
    """Reads lines from an SSH session with editing, history and completion.

    ``complete(text)`` is called with the word before the cursor and returns
    the list of candidate replacements (``rlcompleter`` semantics).
    """

    def __init__(self, session, history=None, complete=None, max_history=1000):
        self.session = session
        self.history = history if history is not None else []
        self.complete = complete
        self.max_history = max_history
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""  # decoded characters not yet turned into keys
        self._eof = False
        self._kill = ""

    # ---- input ----

    def _fill(self):
        """Waits for more input. Raises EOFError at the end of input."""
        while True:
            if self._eof:
                raise EOFError
            data = self.session.read(4096)
            if data is None:  # woken by an interrupt: let it be raised
                continue
            if not data:
                self._eof = True
                self._pending += self._decoder.decode(b"", final=True)
                if self._pending:
                    return
                raise EOFError
            self._pending += self._decoder.decode(data)
            if self._pending:
                return

    def _key(self):
        """Returns the next key: one character, or an escape sequence."""
        while True:
            p = self._pending
            if p:
                if p[0] != "\x1b":
                    self._pending = p[1:]
                    return p[0]
                if len(p) >= 2:
                    if p[1] == "[":
                        m = re.match(r"\x1b\[[0-9;]*[@-~]", p)
                        if m:
                            self._pending = p[m.end():]
                            return m.group(0)
                        if not re.match(r"\x1b\[[0-9;]*$", p) or len(p) > 16:
                            self._pending = p[2:]  # malformed: drop ESC [
                            return ""
                    elif p[1] == "O":
                        if len(p) >= 3:
                            self._pending = p[3:]
                            return p[:3]
                    else:
                        self._pending = p[2:]
                        return p[:2]  # Alt-key
                elif self._eof:
                    self._pending = ""
                    return "\x1b"
            self._fill()

    # ---- output ----

    def _out(self, text):
        self.session.write(text.encode("utf-8", "replace"))

    def _width(self):
        try:
            cols = self.session.size()[0]
        except Exception:
            cols = 80
        return max(cols, 12)

    def _refresh(self):
        """Redraws the prompt and the visible part of the line."""
        text = "".join(self.buf)
        avail = max(self._width() - len(self.prompt) - 1, 4)
        if len(text) <= avail:
            self._scroll = 0
        else:
            if self.pos < self._scroll:
                self._scroll = self.pos
            elif self.pos > self._scroll + avail:
                self._scroll = self.pos - avail
            self._scroll = max(0, min(self._scroll, len(text) - avail + 1))
        visible = text[self._scroll:self._scroll + avail]
        out = "\r" + self.prompt + visible + "\x1b[K"
        back = len(visible) - (self.pos - self._scroll)
        if back > 0:
            out += "\x1b[%dD" % back
        self._out(out)

    def _fits(self):
        return len(self.buf) < max(self._width() - len(self.prompt) - 1, 4) and self._scroll == 0

    # ---- editing ----

    def _insert(self, s):
        self.buf[self.pos:self.pos] = list(s)
        self.pos += len(s)
        if self.pos == len(self.buf) and self._fits():
            self._out(s)  # the common case: typing at the end
        else:
            self._refresh()

    def _move(self, pos):
        pos = max(0, min(pos, len(self.buf)))
        if pos != self.pos:
            self.pos = pos
            self._refresh()

    def _word_left(self):
        i = self.pos
        while i > 0 and not self.buf[i - 1].isalnum():
            i -= 1
        while i > 0 and self.buf[i - 1].isalnum():
            i -= 1
        return i

    def _word_right(self):
        i, n = self.pos, len(self.buf)
        while i < n and not self.buf[i].isalnum():
            i += 1
        while i < n and self.buf[i].isalnum():
            i += 1
        return i

    def _cut(self, start, end):
        if start < end:
            self._kill = "".join(self.buf[start:end])
            del self.buf[start:end]
            self.pos = start
            self._refresh()

    def _history_to(self, index):
        if index < 0 or index > len(self.history) or index == self._hist_i:
            return
        if self._hist_i == len(self.history):
            self._draft = "".join(self.buf)
        self._hist_i = index
        text = self._draft if index == len(self.history) else self.history[index]
        self.buf = list(text)
        self.pos = len(self.buf)
        self._refresh()

    def _tab(self):
        before = "".join(self.buf[:self.pos])
        if not before.strip():
            self._insert("    ")  # Tab at the start of a line indents
            return
        word = _WORD_TAIL.search(before).group(0)
        if not word or self.complete is None:
            self._out("\x07")
            return
        try:
            matches = self.complete(word)
        except Exception:
            matches = []
        matches = list(dict.fromkeys(m for m in matches if m.startswith(word)))
        if not matches:
            self._out("\x07")
            return
        prefix = os.path.commonprefix(matches)
        if len(prefix) > len(word):
            self._insert(prefix[len(word):])
            return
        if len(matches) == 1:
            return
        self._list(matches)

    def _list(self, matches):
        """Shows several completions in columns below the line."""
        width = self._width()
        shown = sorted(matches)[:300]
        colw = max(len(m) for m in shown) + 2
        ncols = max(1, width // colw)
        nrows = (len(shown) + ncols - 1) // ncols
        lines = []
        for r in range(nrows):
            row = [shown[c * nrows + r] for c in range(ncols) if c * nrows + r < len(shown)]
            lines.append("".join(m.ljust(colw) for m in row).rstrip())
        if len(matches) > len(shown):
            lines.append("... and %d more" % (len(matches) - len(shown)))
        self._out("\r\n" + "\r\n".join(lines) + "\r\n")
        self._refresh()

    # ---- the public call ----

    def readline(self, prompt, add_history=True, shown=False):
        """Reads one line (without its end). Raises EOFError on Ctrl-D at
        an empty line or at the end of input, KeyboardInterrupt on Ctrl-C
        (the line is abandoned). shown: the prompt is on the screen already
        (input() wrote it)."""
        self.prompt = prompt
        self.buf = []
        self.pos = 0
        self._scroll = 0
        self._hist_i = len(self.history)
        self._draft = ""
        if not shown:
            self._out(prompt)
        while True:
            k = self._key()
            if k in ("\r", "\n"):
                if k == "\r" and self._pending[:1] == "\n":
                    self._pending = self._pending[1:]
                if self.pos != len(self.buf):
                    self.pos = len(self.buf)
                    self._refresh()
                self._out("\r\n")
                line = "".join(self.buf)
                if add_history and line.strip() and (
                    not self.history or self.history[-1] != line
                ):
                    self.history.append(line)
                    del self.history[: -self.max_history]
                return line
            elif k == "\x03":  # Ctrl-C
                self._out("^C\r\n")
                raise KeyboardInterrupt
            elif k == "\x04":  # Ctrl-D
                if not self.buf:
                    self._out("\r\n")
                    raise EOFError
                if self.pos < len(self.buf):
                    del self.buf[self.pos]
                    self._refresh()
            elif k in ("\x7f", "\x08"):
                if self.pos > 0:
                    self.pos -= 1
                    del self.buf[self.pos]
                    self._refresh()
            elif k == "\x1b[3~":
                if self.pos < len(self.buf):
                    del self.buf[self.pos]
                    self._refresh()
            elif k in ("\x01", "\x1b[H", "\x1bOH", "\x1b[1~", "\x1b[7~"):
                self._move(0)
            elif k in ("\x05", "\x1b[F", "\x1bOF", "\x1b[4~", "\x1b[8~"):
                self._move(len(self.buf))
            elif k in ("\x02", "\x1b[D", "\x1bOD"):
                self._move(self.pos - 1)
            elif k in ("\x06", "\x1b[C", "\x1bOC"):
                self._move(self.pos + 1)
            elif k in ("\x1bb", "\x1b[1;5D", "\x1b[1;3D"):
                self._move(self._word_left())
            elif k in ("\x1bf", "\x1b[1;5C", "\x1b[1;3C"):
                self._move(self._word_right())
            elif k in ("\x10", "\x1b[A", "\x1bOA"):
                self._history_to(self._hist_i - 1)
            elif k in ("\x0e", "\x1b[B", "\x1bOB"):
                self._history_to(self._hist_i + 1)
            elif k == "\x15":  # Ctrl-U
                self._cut(0, self.pos)
            elif k == "\x0b":  # Ctrl-K
                self._cut(self.pos, len(self.buf))
            elif k == "\x17":  # Ctrl-W
                i = self.pos
                while i > 0 and self.buf[i - 1].isspace():
                    i -= 1
                while i > 0 and not self.buf[i - 1].isspace():
                    i -= 1
                self._cut(i, self.pos)
            elif k == "\x1b\x7f":  # Alt-Backspace
                self._cut(self._word_left(), self.pos)
            elif k == "\x1bd":
                self._cut(self.pos, self._word_right())
            elif k == "\x19":  # Ctrl-Y
                if self._kill:
                    self._insert(self._kill)
            elif k == "\x0c":  # Ctrl-L
                self._out("\x1b[H\x1b[2J")
                self._refresh()
            elif k == "\t":
                self._tab()
            elif len(k) == 1 and k >= " " and k != "\x7f":
                self._insert(k)
            # other control keys and unknown sequences are ignored
