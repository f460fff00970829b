"""Runs bench/app.py under Twisted's WSGI container with a fixed thread pool.

`twistd web --wsgi` cannot set the pool size, so the harness starts this
instead: python3 twisted_wsgi.py HOST PORT THREADS (bench/ on PYTHONPATH).
SIGTERM/SIGINT stop the reactor (Twisted installs those handlers itself).
"""

import sys

from twisted.internet import endpoints, reactor
from twisted.python.threadpool import ThreadPool
from twisted.web import server, wsgi

import app


def main():
    host, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    pool = ThreadPool(minthreads=threads, maxthreads=threads, name="wsgi")
    pool.start()
    reactor.addSystemEventTrigger("after", "shutdown", pool.stop)
    site = server.Site(wsgi.WSGIResource(reactor, pool, app.application))
    site.log = lambda request: None  # no access log, like every other server here
    endpoint = endpoints.TCP4ServerEndpoint(reactor, port, backlog=1024, interface=host)
    endpoint.listen(site)
    reactor.run()


if __name__ == "__main__":
    main()
