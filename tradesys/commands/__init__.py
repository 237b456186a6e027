"""Sub-commands of the `tradesys` CLI, one module per area (price, risk, ...)."""
