"""Operations: metrics for Prometheus, dashboards and alerts (deploy/)."""
