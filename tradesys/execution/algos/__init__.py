"""Execution algorithms: parent orders into child orders (see `base`)."""
