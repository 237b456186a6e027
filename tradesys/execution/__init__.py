"""Order management and execution: the OMS state machine and the service that connects it to a broker."""
