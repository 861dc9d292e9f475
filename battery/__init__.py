"""The reliability battery: load, faults, bad input and security checks across the whole server."""
