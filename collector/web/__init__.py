"""The collector's HTTP server: JSON API, dashboard pages, Prometheus metrics (``app.py``)."""
