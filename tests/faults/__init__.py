"""The fault matrix: real processes, injected faults, counted reconciliation.

See docs/reliability.md."""
