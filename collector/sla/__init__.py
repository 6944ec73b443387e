"""The data-completeness SLA (issue 10): per meter class, the share of intervals that are
actual and the share at the head-end within a deadline of their end, evaluated per meter,
gateway and day, with each breach's cause (docs/operations.md, "Data-completeness SLA").

* ``settings``: ``[sla]`` of the collector config (classes, matching, defaults);
* ``period``: ``--period`` / ``?period=`` (a month, a day, a range of days);
* ``events``: the gateways' connectivity history (schema step 9), recorded from ingest;
* ``evaluate``: the evaluation on a store (both backends);
* ``report``: the table / JSON forms; ``cli``: ``meterlink collector sla``;
* ``web``: ``GET /api/v1/sla``, the ``/sla`` page and the Prometheus gauges.
"""

from .evaluate import CAUSES, SlaReport, evaluate
from .settings import SlaClass, SlaSettings, parse_sla

__all__ = ["CAUSES", "SlaClass", "SlaReport", "SlaSettings", "evaluate", "parse_sla"]
