"""Application loaders, called by the C core (python.c) at start-up.

Each ``load_*`` function returns the WSGI callable. A mistake the loader can
explain in one line (a missing module or file, Zope not installed) raises
``LoadError``: the core logs its message alone and exits. Any other
exception is logged with its traceback.
"""

import configparser
import importlib
import os

__all__ = [
    "LoadError",
    "setup_sys_path",
    "load_module",
    "load_paste",
    "load_zope",
    "load_demo",
]


class LoadError(Exception):
    """A loading mistake explained by its message (no traceback needed)."""


def setup_sys_path(entries):
    """Puts the configured python_path entries, then the working directory,
    at the front of sys.path. Each entry is added as a site directory, so
    the .pth files of a virtualenv's site-packages (namespace packages,
    editable installs) work as they would there."""
    import site
    import sys

    before = list(sys.path)
    front = [os.path.abspath(e) for e in entries] + [os.getcwd()]
    for entry in front[:-1]:
        site.addsitedir(entry)
    added = [p for p in sys.path if p not in before and p not in front]
    rest = [p for p in before if p not in front]
    sys.path[:] = front + added + rest


def load_module(spec):
    """``module:callable`` (the callable may be a dotted attribute path;
    ``module`` alone means ``module:application``)."""
    module_name, _, attr = spec.partition(":")
    module_name = module_name.strip()
    attr = attr.strip() or "application"
    if not module_name:
        raise LoadError(f"--app {spec!r}: expected MODULE:CALLABLE")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise LoadError(
                f"--app {spec}: no module named {missing!r} (modules are looked up in "
                "app.python_path / --python-path, the working directory, then Python's path)"
            ) from None
        raise
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(f"--app {spec}: module {module_name!r} has no {attr!r}") from None
    if not callable(obj):
        raise LoadError(f"--app {spec}: {attr!r} is not callable ({type(obj).__name__})")
    return obj


def load_paste(path, name="main"):
    """A PasteDeploy ini file, as ``paster``/``pserve`` would load it: the
    ini's [loggers] set up logging first (with ``here`` and ``__file__``),
    then ``loadapp("config:<abs path>", name=name)``. Plone's generated
    wsgi.ini and Zope's zope.ini run unchanged (their [server:main] section
    is ignored: zfront is the server). When the ini loaded Zope, its
    databases are closed at shutdown, as Zope's runwsgi does."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise LoadError(f"--paste {path}: no such file")
    try:
        from paste.deploy import loadapp
    except ImportError as e:
        raise LoadError(f"--paste needs PasteDeploy (Debian: python3-pastedeploy): {e}") from None
    parser = configparser.RawConfigParser(strict=False)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as e:
        raise LoadError(f"--paste {path}: {e}") from None
    if parser.has_section("loggers"):
        import logging.config

        logging.config.fileConfig(
            path,
            {"here": os.path.dirname(path), "__file__": path},
            disable_existing_loggers=False,
        )
    from importlib.metadata import PackageNotFoundError

    try:
        app = loadapp("config:" + path, name=name)
    except PackageNotFoundError as e:  # "use = egg:Zope#main" without Zope
        raise LoadError(
            f"--paste {path}: it uses the distribution {e.name!r}, which is not installed "
            "where this Python finds it (add its site-packages with --python-path)"
        ) from None
    except LookupError as e:
        if type(e) is LookupError:  # PasteDeploy's "no section / no entry point"
            raise LoadError(f"--paste {path}: {e}") from None
        raise
    import sys

    if "Zope2" in sys.modules:  # a Zope ini (egg:Zope#main): close its DBs as runwsgi does
        _close_zope_dbs_at_shutdown()
    return app


def load_zope(zope_conf):
    """Zope's application over a zope.conf, wrapped as Zope's own WSGI
    set-up wraps it (Zope 4/5): ``Zope2.Startup.run.make_wsgi_app({},
    zope_conf)`` behind ``ZPublisher.httpexceptions`` — the filter that
    Zope's generated zope.ini puts first (``egg:Zope#httpexceptions``), so
    that NotFound, BadRequest, ... raised by the publisher become 404, 400,
    ... responses instead of 500s. Registers a shutdown hook that closes
    Zope's databases, as Zope's runner (runwsgi) does when it stops."""
    path = os.path.abspath(zope_conf)
    try:
        from Zope2.Startup.run import make_wsgi_app
        from ZPublisher.httpexceptions import main as httpexceptions
    except ImportError as e:
        raise LoadError(
            f"--zope-conf needs Zope: {e} (install Zope 4 or 5 where this Python finds it, "
            "e.g. add its site-packages with --python-path)"
        ) from None
    if not os.path.isfile(path):
        raise LoadError(f"--zope-conf {path}: no such file")
    global_conf = {"here": os.path.dirname(path), "__file__": path}
    app = make_wsgi_app(global_conf, path)
    _close_zope_dbs_at_shutdown()
    return httpexceptions(app, global_conf)


def _close_zope_dbs_at_shutdown():
    """Once per process: a zfront.on_shutdown hook closing every database
    Zope opened (``Zope2.opened``, and ``Zope2.DB``), as Zope's runwsgi does
    when its server stops. A FileStorage then writes its index, instead of
    rebuilding it at the next start."""
    global _zope_hook_registered
    if _zope_hook_registered:
        return
    _zope_hook_registered = True
    import zfront

    zfront.on_shutdown(close_zope_databases)


_zope_hook_registered = False


def close_zope_databases():
    """Closes Zope's open databases (each once; an error in one is logged
    and the others are still closed). Does nothing when Zope is not loaded."""
    import logging
    import sys

    zope2 = sys.modules.get("Zope2")
    if zope2 is None:
        return
    dbs = list(getattr(zope2, "opened", None) or [])
    main_db = getattr(zope2, "DB", None)
    if main_db is not None and not any(db is main_db for db in dbs):
        dbs.append(main_db)
    for db in dbs:
        try:
            db.close()
        except Exception:
            logging.getLogger("zfront").exception("closing Zope database %r failed", db)


def load_demo(state_dir):
    """The bundled demo site (zfront.demo), keeping its files in state_dir."""
    from zfront import demo

    return demo.make_app(state_dir)


def zope_webdav_source_port(kind, port):
    """Called by the webdav module at start-up with the WebDAV source
    server's bound port. For an app loaded with --zope-conf or --paste whose
    Python has Zope's publisher, tells Zope the port
    (``ZPublisher.WSGIPublisher.set_webdav_source_port``): Zope then marks
    requests on it ``WEBDAV_SOURCE_PORT=1`` and serves a GET's source
    (``manage_DAVget``) itself. Returns True when Zope took it, False when
    zfront must mark the requests (any other app)."""
    if kind not in ("paste", "zope"):
        return False
    try:
        from ZPublisher.WSGIPublisher import set_webdav_source_port
    except ImportError:
        return False
    set_webdav_source_port(port)
    return True
