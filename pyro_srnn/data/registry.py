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

# --------------------------------------------------------------------------- speech (pyro_srnn.data.speech)
from . import speech  # noqa: E402

register_dataset(DatasetEntry(
    name="timit",
    loader=speech.load_timit,
    description="TIMIT speech, 16 kHz, 200-sample frames; 5% of TRAIN to valid; nats per utterance",
    source="a folder holding TRAIN/ and TEST/ of NIST SPHERE .WAV files",
    how_to_get="licensed by the LDC (catalogue LDC93S1); point --data-dir or PYRO_SRNN_TIMIT at the folder "
               "holding TRAIN/ and TEST/",
    available=speech.timit_available,
    env_var="PYRO_SRNN_TIMIT",
))
register_dataset(DatasetEntry(
    name="perm_timit",
    loader=speech.load_perm_timit,
    description="Perm-TIMIT: TIMIT with RandomState(123456).permutation(200) inside every frame",
    source="the TIMIT folder",
    how_to_get="as timit (LDC93S1); the permutation is applied on load",
    available=speech.timit_available,
    env_var="PYRO_SRNN_TIMIT",
))
register_dataset(DatasetEntry(
    name="vctk",
    loader=speech.load_vctk,
    description="VCTK speech, wav48 resampled to 16 kHz; 35,393/4,424/4,425 split; nats per audio sample",
    source="a folder holding wav48/<speaker>/*.wav, optional train.lst/valid.lst/test.lst "
           "(--data-dir)",
    how_to_get="download the CSTR VCTK Corpus (datashare.ed.ac.uk, CC-BY-4.0) and point --data-dir or "
               "PYRO_SRNN_VCTK at the folder holding wav48/",
    available=speech.vctk_available,
    env_var="PYRO_SRNN_VCTK",
))
register_dataset(DatasetEntry(
    name="blizzard",
    loader=speech.load_blizzard,
    description="Blizzard 2013 audiobook chapters at 16 kHz; split by chapter 1,023/65/59; nats per 8000 samples",
    source="a folder of chapter audio files, mp3 or wav",
    how_to_get="licence from the Blizzard Challenge 2013 organisers (Lessac Technologies audiobooks); "
               "point --data-dir or PYRO_SRNN_BLIZZARD at the chapter folder",
    available=speech.blizzard_available,
    env_var="PYRO_SRNN_BLIZZARD",
))
register_dataset(DatasetEntry(
    name="audio_folder",
    loader=speech.load_audio_folder,
    description="any folder of speech audio (wav/flac/ogg/mp3/SPHERE/G.722) under TIMIT conventions",
    source="a folder of audio files, optionally TRAIN/ and TEST/",
    how_to_get="any recordings you have; .g722 needs `pip install pyro-srnn[speech]`",
    available=speech.audio_folder_available,
    env_var="PYRO_SRNN_AUDIO_DIR",
))
register_dataset(DatasetEntry(
    name="asterisk_prompts",
    loader=speech.load_asterisk_prompts,
    description="Asterisk English prompts (one speaker, 558 G.722 files, 24.5 min), TIMIT conventions",
    source=speech.ASTERISK_PROMPTS_DIR,
    how_to_get="`apt-get install asterisk-core-sounds-en-g722` and `pip install pyro-srnn[speech]`",
    available=speech.asterisk_prompts_available,
    env_var="PYRO_SRNN_ASTERISK_PROMPTS",
))
