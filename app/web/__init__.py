"""The HTTP side of the service: the app factory (``main``), the server that runs it (``server``),
the small rules every request meets first (``middleware``), the database's 503 (``db_errors``),
the dashboard's pages (``pages``) and the offline API docs (``api_docs``). Access control
(``app.api.security``, ``app.api.csrf``) sits with the API it guards, one floor down.

Nothing here is imported by ``app/__init__``: the command line and the worker load the app only
when they serve it.
"""
