"""A stand-in for ZPublisher.WSGIPublisher (Zope 5) for test_webdav.py.

set_webdav_source_port records the port (and writes it to
$ZF_TEST_MARKERS/zope-source-port); publish_module does what Zope's does
with it: a request whose SERVER_PORT is that port gets
WEBDAV_SOURCE_PORT=1 and a GET is sent to PATH/manage_DAVget. Then the
davapp echo answers.
"""
import os

_WEBDAV_SOURCE_PORT = 0


def set_webdav_source_port(port):
    global _WEBDAV_SOURCE_PORT
    _WEBDAV_SOURCE_PORT = port
    markers = os.environ.get("ZF_TEST_MARKERS")
    if markers:
        with open(os.path.join(markers, "zope-source-port"), "a") as f:
            f.write("%s\n" % port)


def publish_module(environ, start_response):
    import davapp
    try:
        server_port = int(environ["SERVER_PORT"])
    except (KeyError, ValueError):
        server_port = 0
    if _WEBDAV_SOURCE_PORT and _WEBDAV_SOURCE_PORT == server_port:
        environ["WEBDAV_SOURCE_PORT"] = 1
        if environ["REQUEST_METHOD"].upper() == "GET":
            environ["PATH_INFO"] = "%s/manage_DAVget" % environ["PATH_INFO"]
    return davapp.application(environ, start_response)
