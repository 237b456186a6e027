"""Quantitative libraries (pure: no Ray, no I/O): options and volatility, later risk and portfolio."""
