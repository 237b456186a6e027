"""Feature computation: technical indicators (batch via TA-Lib, streaming vectorised across symbols),
microstructure features from trades and quotes, cross-asset statistics and packaged macro series."""
