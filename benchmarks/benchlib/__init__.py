"""Machinery shared by the benchmark scripts (run_hello.py, suite.py, profile.py,
pools.py): starting and stopping processes, installing tools, nginx configs,
wrk and its output, CPU and memory of a process tree read from /proc, reports.

The scripts put benchmarks/ on sys.path and import `benchlib.MODULE`.
"""
