"""A stand-in for Zope's Zope2 package (test_webdav.py): only the WSGI
factory zfront's --zope-conf loader calls."""
