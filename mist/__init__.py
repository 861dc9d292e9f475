"""The Mist project package: settings, URL wiring, health endpoints and cross-app commands."""
