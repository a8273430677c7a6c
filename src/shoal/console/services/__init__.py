"""The console's service layer: what each resource does, over a SQLAlchemy session.

One module per resource (``applications``, ``devices``, ...). Services read and write
the database and raise the errors of ``shoal.console.services.errors`` (named by
cause); they know nothing of HTTP. The routers in ``shoal.console.routes`` parse the
request, call one service and return what it answers: no SQL lives in a handler.
"""
