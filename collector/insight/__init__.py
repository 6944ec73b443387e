"""Usage insight for customers (issue 10): consumption by day and hour per service point,
split by TOU period and interval quality, compared with the previous period and last year,
the most expensive hours, and alerts customers set (docs/billing.md, "Usage insight and
alerts").

* ``usage``: aggregation of VEE's derived intervals (the bill's own data), Decimal throughout;
* ``costly``: the most expensive hours, each hour rated by the tariff engine;
* ``rules`` / ``alerts`` / ``hook``: alert rules, their evaluation, the ingest hook;
* ``document``: the JSON document and the text rendering; ``api``, ``pages``, ``cli``.
"""
