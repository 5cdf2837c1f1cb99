"""The engine: governed tasks, leases, watchdog, evidence, lineage and the CLI."""
