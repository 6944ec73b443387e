"""Throughput and size benchmarks of meterlink: ``python -m benchmarks.run_all``.

Each script prints the machine, its parameters and its figures; none fails on a number.
Latest figures and what bounds them: ``docs/benchmarks.md``.
"""
