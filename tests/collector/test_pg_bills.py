"""Rating and issued bills (``test_rating``, ``test_bills_corrections``) again, on
PostgreSQL: the same tests, unchanged, their store and their direct look at its tables
(the triggers that refuse changing an issued bill) on a PostgreSQL schema."""

from __future__ import annotations

from tests.collector import _bills, test_bills_corrections, test_rating
from tests.collector.test_bills_corrections import (  # noqa: F401  (collected here)
    site,
    test_a_period_not_over_is_not_issued,
    test_an_issued_bill_is_numbered_stored_and_never_changed,
    test_late_data_after_the_issue_is_corrected_on_the_next_bill,
)
from tests.collector.test_rating import (  # noqa: F401
    test_full_month_bill_matches_hand_computed_amounts,
    test_interpolation_is_explained_and_the_readings_listed,
    test_money_rounds_half_up_once_per_line,
    test_unknown_period_text_is_refused,
    test_without_a_reading_after_the_end_the_bill_is_to_date,
)

from ._stores import on_postgres

_on_postgres = on_postgres(test_rating, test_bills_corrections, _bills)
