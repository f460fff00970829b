"""The demo's content store: folders and files on disk, WebDAV dead
properties and locks in SQLite.

A resource is named by its path relative to the store: a tuple of name
segments, ``()`` for the root. Names are the decoded URL segments (str; bytes
that are not UTF-8 survive as surrogate escapes, so any name the file system
holds round-trips). The content is plain files under ``root``: what the demo
site serves at ``/`` and what an admin sees with ``ls``.

The database (``<state>/dav.sqlite``) holds

- ``props(path, name, value)``: dead properties; ``name`` is ElementTree's
  ``{namespace}local`` form, ``value`` the property element serialized as XML;
- ``locks(token, path, depth, scope, owner, timeout, expires)``: WebDAV locks;
  ``path`` is the lock root ("/a/b", "/" for the store's root), ``depth`` 0 or
  -1 (infinity), ``expires`` a time.time() value (expired locks are dropped
  when they are next looked at).

Thread safety: the WSGI app runs on several worker threads. Every operation
that reads and changes the store runs under ``Store.lock`` (an RLock that
the DAV layer holds around a whole request's checks and changes), and the one
sqlite connection is only used under it. Copying a request body to a temp
file happens outside the lock; only the final rename is inside.
"""

import os
import shutil
import sqlite3
import threading
import time
import uuid

__all__ = ["Store", "Lock", "StoreError"]

MAX_LOCK_TIMEOUT = 7 * 24 * 3600  # seconds; a client asking more gets this
DEFAULT_LOCK_TIMEOUT = 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS props (
    path TEXT NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (path, name));
CREATE TABLE IF NOT EXISTS locks (
    token TEXT PRIMARY KEY, path TEXT NOT NULL, depth INTEGER NOT NULL,
    scope TEXT NOT NULL, owner BLOB, timeout INTEGER NOT NULL, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS locks_path ON locks (path);
"""


class StoreError(Exception):
    """A name the store refuses (.., NUL, a segment too long)."""


def _b(name):
    """A name as bytes for the file system: UTF-8 whatever the locale says
    (names that were not UTF-8 come back from their surrogate escapes)."""
    return name.encode("utf-8", "surrogateescape")


def key(segs):
    """The database key of a resource: "/" + segments joined by "/"."""
    return "/" + "/".join(segs)


def _below(prefix):
    """A LIKE pattern for every key strictly below `prefix` (escaped)."""
    base = prefix.rstrip("/")
    esc = base.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return esc + "/%"


class Lock:
    """One active lock (a row of the locks table)."""

    __slots__ = ("token", "path", "depth", "scope", "owner", "timeout", "expires")

    def __init__(self, token, path, depth, scope, owner, timeout, expires):
        self.token = token
        self.path = path
        self.depth = depth
        self.scope = scope
        self.owner = owner
        self.timeout = timeout
        self.expires = expires

    def covers(self, path):
        """True if this lock applies to the resource keyed `path`."""
        if path == self.path:
            return True
        if self.depth != 0:
            base = self.path.rstrip("/")
            return path.startswith(base + "/")
        return False


class Store:
    """Files under `root`, properties and locks in the sqlite file `db_path`;
    temp files for uploads in `tmp_dir` (same file system as root, so an
    upload is renamed into place)."""

    def __init__(self, root, db_path, tmp_dir):
        self.root = os.path.abspath(root)
        self.root_b = _b(self.root)
        self.tmp_dir = tmp_dir
        os.makedirs(self.root, exist_ok=True)
        os.makedirs(tmp_dir, exist_ok=True)
        for name in os.listdir(tmp_dir):  # uploads a crash left half-way
            try:
                os.unlink(os.path.join(tmp_dir, name))
            except OSError:
                pass
        self.lock = threading.RLock()
        self.db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self.db.executescript(_SCHEMA)

    # ------------------------------------------------------------ names

    def fs_path(self, segs):
        """The file system path (bytes) of a resource. Raises StoreError for a name
        that could leave the root or that no file system takes."""
        for s in segs:
            if s in ("", ".", "..") or "/" in s or "\0" in s:
                raise StoreError("invalid name %r" % s)
            if len(_b(s)) > 255:
                raise StoreError("name too long")
        return os.path.join(self.root_b, *map(_b, segs))

    def stat(self, segs):
        """os.stat of a resource, or None when it does not exist."""
        try:
            return os.stat(self.fs_path(segs))
        except (OSError, ValueError):
            return None

    def children(self, segs):
        """The names in a collection, sorted."""
        try:
            return sorted(n.decode("utf-8", "surrogateescape")
                          for n in os.listdir(self.fs_path(segs)))
        except OSError:
            return []

    # ------------------------------------------------------------ content

    def temp_file(self):
        """A new temp file (path, binary file object) for an upload."""
        path = _b(os.path.join(self.tmp_dir, "put-%s" % uuid.uuid4().hex))
        return path, open(path, "xb")

    def commit_file(self, tmp, segs):
        """Renames an upload into place (replacing the file there)."""
        os.replace(tmp, self.fs_path(segs))

    def make_collection(self, segs):
        os.mkdir(self.fs_path(segs))

    def delete(self, segs):
        """Removes a resource (a collection with everything in it), its
        properties and every lock rooted at or below it."""
        p = self.fs_path(segs)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)
        k = key(segs)
        self.db.execute("DELETE FROM props WHERE path = ? OR path LIKE ? ESCAPE '\\'",
                        (k, _below(k)))
        self.db.execute("DELETE FROM locks WHERE path = ? OR path LIKE ? ESCAPE '\\'",
                        (k, _below(k)))

    def copy(self, src, dst, depth_infinity=True):
        """Copies a resource with its dead properties (not its locks). A
        collection copied with depth 0 is an empty collection with the
        properties of the source."""
        sp, dp = self.fs_path(src), self.fs_path(dst)
        if os.path.isdir(sp):
            if depth_infinity:
                shutil.copytree(sp, dp, symlinks=True)
            else:
                os.mkdir(dp)
        else:
            shutil.copyfile(sp, dp)
        sk, dk = key(src), key(dst)
        rows = self.db.execute(
            "SELECT path, name, value FROM props WHERE path = ?"
            + (" OR path LIKE ? ESCAPE '\\'" if depth_infinity else ""),
            (sk, _below(sk)) if depth_infinity else (sk,)).fetchall()
        self.db.executemany("INSERT OR REPLACE INTO props VALUES (?, ?, ?)",
                            [(dk + path[len(sk):] if sk != "/" else dk + path, name, value)
                             for path, name, value in rows])

    def move(self, src, dst):
        """Renames a resource; its dead properties go with it, the locks
        rooted at or below the source are removed (RFC 4918 7.7: a lock does
        not move with its resource)."""
        os.rename(self.fs_path(src), self.fs_path(dst))
        sk, dk = key(src), key(dst)
        self.db.execute("UPDATE props SET path = ? || substr(path, ?) "
                        "WHERE path = ? OR path LIKE ? ESCAPE '\\'",
                        (dk, len(sk) + 1, sk, _below(sk)))
        self.db.execute("DELETE FROM locks WHERE path = ? OR path LIKE ? ESCAPE '\\'",
                        (sk, _below(sk)))

    # ------------------------------------------------------------ properties

    def props(self, segs):
        """Dead properties of a resource: a list of (name, xml bytes)."""
        return self.db.execute("SELECT name, value FROM props WHERE path = ? ORDER BY name",
                               (key(segs),)).fetchall()

    def prop(self, segs, name):
        row = self.db.execute("SELECT value FROM props WHERE path = ? AND name = ?",
                              (key(segs), name)).fetchone()
        return row[0] if row else None

    def patch_props(self, segs, changes):
        """Applies [(name, xml bytes or None to remove)] in one transaction."""
        k = key(segs)
        self.db.execute("BEGIN")
        try:
            for name, value in changes:
                if value is None:
                    self.db.execute("DELETE FROM props WHERE path = ? AND name = ?", (k, name))
                else:
                    self.db.execute("INSERT OR REPLACE INTO props VALUES (?, ?, ?)",
                                    (k, name, value))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------ locks

    def _expire(self):
        self.db.execute("DELETE FROM locks WHERE expires < ?", (time.time(),))

    def locks_covering(self, segs):
        """Active locks that apply to a resource (rooted at it, or at an
        ancestor with depth infinity)."""
        self._expire()
        k = key(segs)
        ancestors = ["/" + "/".join(segs[:i]) for i in range(len(segs) + 1)]
        marks = ",".join("?" * len(ancestors))
        rows = self.db.execute("SELECT * FROM locks WHERE path IN (%s)" % marks, ancestors)
        return [lock for lock in (Lock(*r) for r in rows) if lock.covers(k)]

    def locks_below(self, segs):
        """Active locks rooted strictly below a resource."""
        self._expire()
        k = key(segs)
        rows = self.db.execute("SELECT * FROM locks WHERE path LIKE ? ESCAPE '\\'",
                               (_below(k),))
        return [Lock(*r) for r in rows]

    def get_lock(self, token):
        self._expire()
        row = self.db.execute("SELECT * FROM locks WHERE token = ?", (token,)).fetchone()
        return Lock(*row) if row else None

    def add_lock(self, segs, depth, scope, owner, timeout):
        """Records a new lock; returns it (its token is a fresh urn:uuid)."""
        timeout = min(timeout, MAX_LOCK_TIMEOUT)
        lock = Lock("urn:uuid:%s" % uuid.uuid4(), key(segs), depth, scope, owner, timeout,
                    time.time() + timeout)
        self.db.execute("INSERT INTO locks VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (lock.token, lock.path, lock.depth, lock.scope, lock.owner,
                         lock.timeout, lock.expires))
        return lock

    def refresh_lock(self, lock, timeout):
        lock.timeout = min(timeout, MAX_LOCK_TIMEOUT)
        lock.expires = time.time() + lock.timeout
        self.db.execute("UPDATE locks SET timeout = ?, expires = ? WHERE token = ?",
                        (lock.timeout, lock.expires, lock.token))
        return lock

    def remove_lock(self, token):
        self.db.execute("DELETE FROM locks WHERE token = ?", (token,))
