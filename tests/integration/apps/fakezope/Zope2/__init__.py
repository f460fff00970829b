"""Stand-in for Zope's Zope2 package (see ../README.md). Zope2.App.startup
sets DB and appends to opened, as Zope 5.8 does."""
bobo_application = None
DB = None
opened = []
