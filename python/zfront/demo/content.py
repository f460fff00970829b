"""The demo site's content root, for the SSH console: ``site['docs']``.

A tiny in-memory object tree in the style of a Zope site (folders holding
documents and files), built once per demo application and shared by every
console session, so what one admin changes another sees -- the same
"live instance" feeling a Zope ``app`` gives::

    >>> site
    <Folder / (2 items)>
    >>> site['docs'].keys()
    ['index', 'routes', 'ssh']
    >>> print(site['docs']['ssh'].text)
    >>> site['files']['big.bin'].size
"""

import os
import threading

__all__ = ["Folder", "Document", "File", "site_for"]


class Item:
    def __init__(self, name):
        self.name = name
        self.parent = None

    @property
    def path(self):
        if self.parent is None:
            return "/"
        base = self.parent.path
        return base.rstrip("/") + "/" + self.name


class Folder(Item):
    """A container: a mapping of names to items, in insertion order."""

    def __init__(self, name="", title=""):
        super().__init__(name)
        self.title = title
        self._items = {}
        self._lock = threading.Lock()

    def add(self, item):
        with self._lock:
            if item.name in self._items:
                raise KeyError("%r already exists in %s" % (item.name, self.path))
            item.parent = self
            self._items[item.name] = item
        return item

    def __getitem__(self, name):
        return self._items[name]

    def __delitem__(self, name):
        with self._lock:
            self._items.pop(name).parent = None

    def __contains__(self, name):
        return name in self._items

    def __iter__(self):
        return iter(list(self._items))

    def __len__(self):
        return len(self._items)

    def keys(self):
        return sorted(self._items)

    def values(self):
        return [self._items[k] for k in self.keys()]

    def items(self):
        return [(k, self._items[k]) for k in self.keys()]

    def get(self, name, default=None):
        return self._items.get(name, default)

    def __repr__(self):
        return "<Folder %s (%d items)>" % (self.path, len(self))


class Document(Item):
    """A text page."""

    def __init__(self, name, title, text):
        super().__init__(name)
        self.title = title
        self.text = text

    def __repr__(self):
        return "<Document %s %r>" % (self.path, self.title)


class File(Item):
    """A file of the demo's state directory (read on demand)."""

    def __init__(self, name, filename):
        super().__init__(name)
        self.filename = filename

    @property
    def size(self):
        return os.path.getsize(self.filename)

    def read(self, n=-1, offset=0):
        with open(self.filename, "rb") as f:
            f.seek(offset)
            return f.read(n)

    def __repr__(self):
        try:
            return "<File %s (%d bytes)>" % (self.path, self.size)
        except OSError:
            return "<File %s (missing)>" % self.path


def _build(app):
    root = Folder("", "zfront demo")
    docs = root.add(Folder("docs", "Documentation"))
    docs.add(Document("index", "The zfront demo",
                      "The demo site shows what zfront serves: /hello, a large file sent\n"
                      "by the event loop (/files/big.bin), uploads (/upload) and the WSGI\n"
                      "environ (/environ)."))
    routes = getattr(app, "routes", {})
    docs.add(Document("routes", "Routes",
                      "\n".join("%-16s %s" % (path, ", ".join(methods))
                                for path, (_, methods) in sorted(routes.items()))))
    docs.add(Document("ssh", "The SSH console",
                      "You are in it: a Python console inside the running server.\n"
                      "`app` is the WSGI application, `site` this content tree, and\n"
                      "`zfront` the server's module. Ctrl-C interrupts running code,\n"
                      "Ctrl-D ends the session."))
    # the files folder of the content store (<state>/content/files)
    files = root.add(Folder("files", "Files"))
    content_dir = getattr(app, "content_dir", None)
    files_dir = os.path.join(content_dir, "files") if content_dir else None
    if files_dir and os.path.isdir(files_dir):
        for name in sorted(os.listdir(files_dir)):
            full = os.path.join(files_dir, name)
            if os.path.isfile(full):
                files.add(File(name, full))
    return root


_sites = {}
_lock = threading.Lock()


def site_for(app):
    """The content root of a demo application (built once per app)."""
    with _lock:
        site = _sites.get(id(app))
        if site is None or site[0] is not app:
            site = (app, _build(app))
            _sites[id(app)] = site
        return site[1]
