"""The administrators' REST API, one router per resource over ``shoal.console.services``.

Each module parses the request (path, query, body), calls one service function and
returns its answer; the services raise errors by cause that ``shoal.console.app`` maps
to HTTP statuses. ``shoal.console.api`` includes every router under ``/api/v1``.
"""
