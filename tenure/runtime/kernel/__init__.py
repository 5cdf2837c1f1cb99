"""The kernel: one run's state, the per-resumption gate, leases, and the governed step.

A tool call or agent invocation is governed in :mod:`._steps` (decide, record, issue the
lease, then run the body under its task's one :func:`._gate.governed` wrapper). Services
around the kernel (watchdog, stall detector, approvals, revocations, isolation) reach a run
only through the narrow interface it offers them.
"""
