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
    "paste_server_options",
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
    is read separately, by paste_server_options). When the ini loaded Zope, its
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


# [server:main] options of waitress (what Plone's recipes write) that zfront
# honours, with the same meaning. Others are listed as ignored.
_WAITRESS = ("listen", "host", "port", "threads", "max_request_body_size",
             "clear_untrusted_proxy_headers", "trusted_proxy", "url_scheme")
_IGNORED_QUIETLY = ("use", "paste.server_factory", "here", "__file__")


def _waitress_bool(path, name, text):
    v = text.strip().lower()
    if v in ("1", "true", "yes", "on", "y", "t"):
        return "true"
    if v in ("0", "false", "no", "off", "n", "f", ""):
        return "false"
    raise LoadError(f"--paste {path}: [server:main] {name} = {text!r}: expected true or false")


def _waitress_int(path, name, text):
    try:
        v = int(text.strip())
    except ValueError:
        raise LoadError(f"--paste {path}: [server:main] {name} = {text!r}: expected an integer") \
            from None
    if v < 0:
        raise LoadError(f"--paste {path}: [server:main] {name} = {text!r}: must not be negative")
    return str(v)


def _listen_addr(path, item):
    host, sep, port = item.rpartition(":")
    if not sep or not port.isdigit():
        raise LoadError(f"--paste {path}: [server:main] listen {item!r}: expected HOST:PORT")
    if host in ("*", ""):
        host = "0.0.0.0"
    elif host == "localhost":
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def paste_server_options(path, name="main"):
    """The ``[server:NAME]`` options of a PasteDeploy ini that zfront
    honours (waitress's, as Plone writes them), as ``(pairs, ignored)``:
    ``pairs`` is ``[(zfront key, text), ...]`` for ``zf_config_set``,
    ``ignored`` the option names zfront does not use. No section: ``([],
    [])``. A value zfront cannot use raises LoadError."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise LoadError(f"--paste {path}: no such file")
    parser = configparser.RawConfigParser(strict=False)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as e:
        raise LoadError(f"--paste {path}: {e}") from None
    section = f"server:{name}"
    if not parser.has_section(section):
        return [], []
    opts = {k: v for k, v in parser.items(section)}
    pairs, ignored = [], []
    if "listen" in opts:
        for item in opts["listen"].split():
            pairs.append(("http.listen", _listen_addr(path, item)))
    elif "port" in opts or "host" in opts:
        host = opts.get("host", "0.0.0.0").strip()
        port = _waitress_int(path, "port", opts.get("port", "8080"))
        pairs.append(("http.listen", _listen_addr(path, f"{host}:{port}")))
    if "threads" in opts:
        threads = _waitress_int(path, "threads", opts["threads"])
        if threads == "0":
            raise LoadError(f"--paste {path}: [server:main] threads must be at least 1")
        pairs.append(("server.threads", threads))
    if "max_request_body_size" in opts:
        pairs.append(("http.max_body_size",
                      _waitress_int(path, "max_request_body_size", opts["max_request_body_size"])))
    if "trusted_proxy" in opts:
        for proxy in opts["trusted_proxy"].split():
            if proxy == "*":
                pairs += [("server.trusted_proxies", "0.0.0.0/0"),
                          ("server.trusted_proxies", "::/0")]
            else:
                pairs.append(("server.trusted_proxies", proxy))
    if "clear_untrusted_proxy_headers" in opts:
        pairs.append(("server.clear_untrusted_proxy_headers",
                      _waitress_bool(path, "clear_untrusted_proxy_headers",
                                     opts["clear_untrusted_proxy_headers"])))
    elif "trusted_proxy" in opts:  # waitress >= 2.0 clears them by default
        pairs.append(("server.clear_untrusted_proxy_headers", "true"))
    if "url_scheme" in opts:
        scheme = opts["url_scheme"].strip()
        if scheme not in ("http", "https"):
            raise LoadError(f"--paste {path}: [server:main] url_scheme = {scheme!r}: "
                            "expected http or https")
        pairs.append(("server.url_scheme", scheme))
    ignored = sorted(k for k in opts if k not in _WAITRESS and k not in _IGNORED_QUIETLY
                     and k not in parser.defaults())
    return pairs, ignored


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
