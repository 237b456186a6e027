"""Domain core: instruments, market-data schemas, orders, fills and portfolio accounting.

Pure Python and Arrow: nothing here imports Ray or does I/O.
"""
