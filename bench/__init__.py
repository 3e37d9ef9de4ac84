"""Benchmarks that print figures as ratios against a baseline measured in the same run.

Run them all with ``python -m bench`` (``--quick`` for tiny sizes); each module exposes
``run(sizes) -> list[RatioRow]`` and is registered in ``bench.__main__.BENCHMARKS``.
"""
