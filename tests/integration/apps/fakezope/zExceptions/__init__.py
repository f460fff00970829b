"""Stand-in for zExceptions (see ../README.md): HTTP exceptions that are
also WSGI applications answering with their status."""


class HTTPException(Exception):
    status = 500
    reason = "Internal Server Error"

    def __call__(self, environ, start_response):
        body = ("%d %s: %s\n" % (self.status, self.reason, self)).encode()
        start_response("%d %s" % (self.status, self.reason),
                       [("Content-Type", "text/plain; charset=utf-8"),
                        ("Content-Length", str(len(body)))])
        return [body]


class BadRequest(HTTPException):
    status = 400
    reason = "Bad Request"


class Unauthorized(HTTPException):
    status = 401
    reason = "Unauthorized"


class NotFound(HTTPException):
    status = 404
    reason = "Not Found"
