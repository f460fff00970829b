"""Stand-in for Zope2.Startup.run (see ../../README.md)."""


def make_wsgi_app(global_config, zope_conf):
    """Like Zope's: configures from zope_conf, starts the application and
    returns the bare publisher, without the httpexceptions filter."""
    from Zope2.App.startup import startup
    from ZPublisher.WSGIPublisher import publish_module

    with open(zope_conf) as f:
        f.read()
    startup(zope_conf)
    return publish_module
