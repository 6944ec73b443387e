"""Every fault of the matrix by name, with its CI run count and its long-run count."""

from __future__ import annotations

from .agent_kills import agent_kill_capture, agent_kill_publish, agent_kill_write
from .backlog import backlog, backlog_week
from .broker_faults import broker_kill_persisted, broker_kill_wiped, broker_outage
from .clock_steps import clock_back, clock_forward
from .collector_kills import collector_kill
from .common import FaultFn
from .disk_full import disk_drop_oldest, disk_stop_capture, disk_tmpfs
from .multi_collector import (
    mc_agent_kill,
    mc_all_kill,
    mc_broker_kill,
    mc_collector_kill,
    mc_collector_lost,
    mc_collector_lost_expiry,
    mc_collector_pause,
    mc_pg_restart,
)
from .power_cut import power_cut
from .replay import replay_batch
from .two_gateways import two_gateways

# name -> (function, runs in CI, runs in the long version)
FAULTS: dict[str, tuple[FaultFn, int, int]] = {
    "agent_kill_capture": (agent_kill_capture, 2, 20),
    "agent_kill_write": (agent_kill_write, 2, 20),
    "agent_kill_publish": (agent_kill_publish, 2, 20),
    "collector_kill": (collector_kill, 3, 20),
    "broker_kill_persisted": (broker_kill_persisted, 1, 20),
    "broker_kill_wiped": (broker_kill_wiped, 1, 20),
    "broker_outage": (broker_outage, 1, 3),
    "disk_drop_oldest": (disk_drop_oldest, 1, 3),
    "disk_stop_capture": (disk_stop_capture, 1, 3),
    "disk_tmpfs": (disk_tmpfs, 1, 3),  # skipped (noted) where mount -t tmpfs is refused
    "power_cut": (power_cut, 2, 20),
    "clock_back": (clock_back, 1, 3),
    "clock_forward": (clock_forward, 1, 3),
    "replay_batch": (replay_batch, 1, 3),
    "two_gateways": (two_gateways, 1, 3),
    "backlog": (backlog, 1, 1),
    "backlog_week": (backlog_week, 0, 1),  # long version only
    # several collectors on one PostgreSQL database (tests/faults/multi_collector.py)
    "mc_collector_kill": (mc_collector_kill, 2, 10),
    "mc_collector_lost": (mc_collector_lost, 1, 10),
    "mc_collector_lost_expiry": (mc_collector_lost_expiry, 0, 10),  # a shorter MQTT session
    "mc_collector_pause": (mc_collector_pause, 1, 10),
    "mc_all_kill": (mc_all_kill, 1, 10),
    "mc_broker_kill": (mc_broker_kill, 1, 10),
    "mc_agent_kill": (mc_agent_kill, 1, 10),
    "mc_pg_restart": (mc_pg_restart, 1, 10),
}
