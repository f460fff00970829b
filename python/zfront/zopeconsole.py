"""SSH console namespace for Zope: ``[ssh] namespace = "zfront.zopeconsole:namespace"``.

Each console session gets what ``bin/instance debug`` gave, but inside the
running, serving instance:

  app          the Zope application root, on a fresh ZODB connection of
               its own (wrapped with a REQUEST when Testing.makerequest is
               available, so acquisition of REQUEST works)
  transaction  the transaction module: nothing is written until you call
               ``transaction.commit()``; ``transaction.abort()`` drops your
               changes; ``app._p_jar.sync()`` sees other commits
  zfront       the server's module

When the session ends (Ctrl-D, exit(), the client leaves) the transaction
is aborted -- uncommitted changes are discarded -- and the connection goes
back to the pool. The transaction manager is per thread, and each console
session has a thread of its own, so sessions never share a transaction with
each other or with the requests the workers serve.
"""

__all__ = ["namespace"]


def namespace(session):
    """A generator namespace hook (see zfront.console): yields the names,
    then cleans up after the session."""
    import transaction
    import Zope2

    import zfront

    app = Zope2.app()  # opens a new connection from the main database
    conn = app._p_jar
    try:
        from Testing.makerequest import makerequest
    except ImportError:
        makerequest = None
    if makerequest is not None:
        app = makerequest(app)
    try:
        yield {"app": app, "transaction": transaction, "zfront": zfront}
    finally:
        try:
            transaction.abort()
        finally:
            conn.close()
