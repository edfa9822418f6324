"""Registers every data set the zoo knows. One entry per name; readers live in their own modules."""
from __future__ import annotations

from .core import DatasetEntry, register_dataset
from . import bach

register_dataset(DatasetEntry(
    name="bach_chorales",
    loader=bach.load_bach_chorales,
    description="371 Bach chorales from the music21 corpus, 88-key rolls at quarter notes (default)",
    source="music21 corpus (installed with the package)",
    how_to_get="installed with pyro-srnn (music21 dependency); nothing to download",
    available=lambda data_dir: True,
))
