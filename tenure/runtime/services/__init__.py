"""Services around the kernel: the watchdog, the stall detector, approvals and revocations."""
