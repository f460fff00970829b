"""Factories for the PasteDeploy test (`use = call:pasteapp:make_app`).

The app answers with what PasteDeploy gave it, so the test can check that
the ini's settings and %(here)s interpolation reached the factory, and that
a [filter:] in a [pipeline:] wraps it.
"""
import json


def make_app(global_conf, **local_conf):
    def app(environ, start_response):
        body = json.dumps({
            "greeting": local_conf.get("greeting"),
            "datafile": local_conf.get("datafile"),
            "here": global_conf.get("here"),
            "filtered": environ.get("pasteapp.filtered", False),
            "channel": environ.get("zfront.channel"),
        }, sort_keys=True).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return app


def make_filter(global_conf, **local_conf):
    header = local_conf.get("header", "X-Filtered")

    def filter_(app):
        def wrapped(environ, start_response):
            environ["pasteapp.filtered"] = True

            def sr(status, headers, exc_info=None):
                return start_response(status, headers + [(header, "yes")], exc_info)
            return app(environ, sr)
        return wrapped
    return filter_
