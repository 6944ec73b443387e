"""The ingest tests (``test_ingest``) and the fleet state's store tests again, on PostgreSQL.

The same tests, unchanged: each ``open_store`` of their SQLite file opens a PostgreSQL
schema instead, and their direct look at the tables runs there (``_stores.on_postgres``).
"""

from __future__ import annotations

from tests.collector import test_fleet_state, test_ingest
from tests.collector.test_fleet_state import (  # noqa: F401  (collected here)
    test_a_database_from_before_the_fleet_tables_is_rebuilt_from_its_rows,
    test_committed_transactions_feed_the_fleet_and_it_survives_a_restart,
    test_messages_naming_a_gateway_never_enrolled_add_no_gateway_to_the_fleet,
)
from tests.collector.test_ingest import *  # noqa: F403  (collected here: every ingest test)

from ._stores import on_postgres

_on_postgres = on_postgres(test_ingest, test_fleet_state)
