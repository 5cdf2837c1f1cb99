"""Tenure across processes and hosts: the PostgreSQL backend, workers and their faults."""
