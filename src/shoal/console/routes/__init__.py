"""The console's REST API, one router per resource (included by ``shoal.console.app``)."""
