"""A stand-in for Zope's ZPublisher package (test_webdav.py): only what
zfront's loader touches."""
