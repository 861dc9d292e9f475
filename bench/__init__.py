"""Mist's benchmark harness (`./dev bench`, i.e. `python -m bench`): see bench/RESULTS.md.

Every figure is a ratio of two things measured side by side in the same run (Mist against a
baseline doing comparable work), so a busy shared machine slows both sides alike; absolute numbers
are printed beside them as secondary information. Not part of the test suite.
"""
