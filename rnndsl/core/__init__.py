"""The bottom of the house, shared by every stage: errors and how they render with a
place (errors.py), symbolic sizes and types (shapes.py), the Op enum with its tables
(ops.py), atomic file writes (files.py), what a whole number is (numbers.py) and the
version (version.py). Imports nothing
of rnndsl.
"""
