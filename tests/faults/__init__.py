"""Fault injection: every governance dependency that fails, fails closed."""
