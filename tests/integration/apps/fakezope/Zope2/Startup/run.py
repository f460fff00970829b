"""Stand-in for Zope2.Startup.run (see ../../README.md)."""


def make_wsgi_app(global_config, zope_conf):
    """Like Zope's: configures from zope_conf, starts the application and
    returns the bare publisher, without the httpexceptions filter."""
    from Zope2.App.startup import startup
    from ZPublisher.WSGIPublisher import publish_module

    with open(zope_conf) as f:
        conf = f.read()
    startup(zope_conf)
    for line in conf.splitlines():  # a test's own app behind the publisher
        if line.startswith("delegate "):
            from ZPublisher import WSGIPublisher

            module, _, attr = line.split(None, 1)[1].strip().partition(":")
            WSGIPublisher.delegate = getattr(__import__(module), attr)
    return publish_module
