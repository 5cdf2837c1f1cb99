"""Tenure."""
