"""Stand-in for Zope2.App.startup (see ../../README.md)."""
import os

import Zope2


class FakeDB:
    """Records close() in $ZF_TEST_MARKERS/zope-db.log (FileStorage writes
    its index there, so a DB never closed means a rebuild at the next
    start)."""

    def __init__(self, name):
        self.name = name

    def close(self):
        with open(os.path.join(os.environ["ZF_TEST_MARKERS"], "zope-db.log"), "a") as f:
            f.write("closed %s\n" % self.name)


def startup(conf_path):
    db = FakeDB(os.path.basename(conf_path))
    Zope2.DB = db
    Zope2.opened.append(db)
    with open(os.path.join(os.environ["ZF_TEST_MARKERS"], "zope-db.log"), "a") as f:
        f.write("opened %s\n" % db.name)
