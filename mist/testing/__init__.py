"""Test support shared by every app's tests (pytest plugin, fixtures, live servers)."""
