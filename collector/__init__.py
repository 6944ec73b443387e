"""The head-end: MQTT ingest, signature check, dedup, storage, rating and bills.

Layout: ``config`` (TOML settings), ``store/`` (storage interface and its SQLite
implementation), ``registry`` (gateway keys and meter bindings), ``ingest`` (verify -> bind ->
dedup -> commit, callable without MQTT), ``service`` (the MQTT side), ``rating/`` (tariffs,
accounts, bills), ``cli`` (``meterlink collector ...`` / ``python -m collector ...``).
"""
