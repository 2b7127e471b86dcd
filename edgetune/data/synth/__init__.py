"""The built-in synthetic corpus: speech engines (eSpeak NG, Piper, Flite, Kokoro)
behind one interface, recording-like effects, background noise, and `build_corpus`,
which writes it all in the Speech Commands layout."""

from edgetune.data.synth.corpus import (
    COMMANDS,
    DIGITS,
    TASKS,
    UNKNOWN_WORDS,
    VOWELS,
    build_corpus,
    voice_identities,
)
from edgetune.data.synth.engines import Voice, Word, available_engines, get_engine

__all__ = [
    "COMMANDS", "DIGITS", "TASKS", "UNKNOWN_WORDS", "VOWELS", "Voice", "Word",
    "available_engines", "build_corpus", "get_engine", "voice_identities",
]
