"""In-process backtesting: the live loop's step driven by a replay clock, no actors."""
