"""Stand-in for ZPublisher.httpexceptions (see ../README.md): the WSGI
filter that answers zExceptions.HTTPException with its own status."""
from zExceptions import HTTPException


class HTTPExceptionHandler:
    def __init__(self, application, global_conf=None):
        self.application = application
        self.global_conf = global_conf

    def __call__(self, environ, start_response):
        environ["Zope2.httpexceptions"] = self
        try:
            return self.application(environ, start_response)
        except HTTPException as exc:
            return exc(environ, start_response)


def main(app, global_conf=None):
    return HTTPExceptionHandler(app, global_conf=global_conf)
