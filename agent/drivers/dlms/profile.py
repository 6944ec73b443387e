"""The load profile (Profile Generic, class 7): backfill by range from the last stored
entry to now. (Issue 4: to be written.)"""

from __future__ import annotations
