"""Data in: readers per file format, the three layouts with validation, cleaning
with counted drop reasons, and the split by prompt."""

from divtune.data.cleaning import DROP_REASONS, clean_responses, drop_reason
from divtune.data.layouts import LAYOUTS, REQUIRED_COLUMNS, reddit_prompt
from divtune.data.loading import LoadReport, Pool, load_pools
from divtune.data.readers import iter_rows
from divtune.data.split import seeded_subset, split_by_prompt

__all__ = [
    "DROP_REASONS",
    "LAYOUTS",
    "REQUIRED_COLUMNS",
    "LoadReport",
    "Pool",
    "clean_responses",
    "drop_reason",
    "iter_rows",
    "load_pools",
    "reddit_prompt",
    "seeded_subset",
    "split_by_prompt",
]
