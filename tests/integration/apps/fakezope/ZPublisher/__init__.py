"""Stand-in for Zope's ZPublisher package (see ../README.md)."""
