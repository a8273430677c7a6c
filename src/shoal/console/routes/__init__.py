"""The console's REST API, one router module per resource (included by ``app.py``)."""
