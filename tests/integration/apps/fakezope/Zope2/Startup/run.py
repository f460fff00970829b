"""Stand-in for Zope2.Startup.run: make_wsgi_app returns the fake
ZPublisher's publish_module (in front of the davapp echo)."""


def make_wsgi_app(global_config, zope_conf):
    from ZPublisher.WSGIPublisher import publish_module
    return publish_module
