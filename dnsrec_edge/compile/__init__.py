"""TVM compilation per hardware target: target registry, build, tuning, artifacts.

Nothing here imports TVM at import time; the functions that need it import it inside.
"""
