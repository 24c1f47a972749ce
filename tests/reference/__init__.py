"""Frequentist reference implementations written for the tests (not used by the package)."""
