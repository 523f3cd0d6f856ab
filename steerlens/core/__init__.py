"""The foundations every layer stands on: the one result protocol (:mod:`.results`), the
steering-vector type (:mod:`.vectors`, :mod:`.vector_formats`), hook-site names
(:mod:`.sites`), precision, run folders, config checks, plots and small helpers."""
