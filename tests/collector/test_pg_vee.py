"""VEE tests (``test_vee``) again, on PostgreSQL: the same tests, unchanged, their store and
their direct look at its tables on a PostgreSQL schema (``_stores.on_postgres``).

A choice that goes through every VEE query and write of the store at least once (derived
intervals, findings, estimates and what supersedes them, like-day history, swaps, operator
audit, the report's reads, rating's reads, a fault rolled back); the rest of ``test_vee``
varies the rules' arithmetic, which does not depend on the store. ``test_pg_cli`` runs
``vee report`` on PostgreSQL as a process."""

from __future__ import annotations

from tests.collector import test_vee
from tests.collector.test_vee import (  # noqa: F401  (collected here)
    key,
    test_3_hour_gap_is_estimated_from_the_like_day_profile_exactly,
    test_a_day_of_load_profile_gives_96_actual_intervals_exactly,
    test_a_decrease_that_is_no_rollover_is_an_error_and_not_used,
    test_a_new_serial_number_is_a_meter_swap_and_registers_are_not_mixed,
    test_a_recorded_meter_swap_never_mixes_the_old_and_new_registers,
    test_a_vee_fault_on_one_meter_keeps_its_readings_and_the_other_meters,
    test_editing_a_high_glitch_clears_the_decreases_it_caused,
    test_lost_records_arriving_later_replace_the_estimate_and_both_are_kept,
    test_operator_reject_accept_and_edit_are_audited_never_overwrites,
    test_rating_reads_current_intervals_and_the_history_through_the_store,
    test_timestamps_in_the_future_or_beyond_retention_are_flagged,
    test_vee_report_lists_flags_estimates_swaps_and_sequence_gaps,
)

from ._stores import on_postgres

_on_postgres = on_postgres(test_vee)
