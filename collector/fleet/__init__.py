"""Fleet state of the head-end: per gateway and per meter (``state``), fed by ingest
(``tracking``), kept in the store (``sqlite``), exported as Prometheus metrics (``metrics``).

Nothing is imported here, so ``collector.store`` can import ``collector.fleet.sqlite``
without a cycle.
"""
