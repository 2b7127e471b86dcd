"""How people who learnt English later say the command words and digits.

A speech engine says each word the one way its lexicon spells it. People whose first
language is French, German, Greek, Spanish... keep some habits of it: a tense /i/ for
/ɪ/ (six as "seeks"), /s/ or /t/ for /θ/ (three as "sree"), no /z/ (zero as "sero"),
/v/ for /w/ (one as "van"), full vowels where English reduces them (seven as "seven",
not "sev'n"), plain /o/ and /e/ for the diphthongs (no as "naw", eight as "et").

Each variant is eSpeak NG's English phoneme mnemonics (`espeak-ng -x` prints a word's),
said through eSpeak's `[[...]]` phoneme input by the engines that take it (eSpeak and
MBROLA, whose accented voices then add their own sounds). A variant never spells another
target or `_unknown_` word of the corpus (no "tree" for three, "free" is a near miss).
"""

from __future__ import annotations

import numpy as np

ACCENT_VARIANTS: dict[str, tuple[str, ...]] = {
    "zero": ("s'i@roU", "z'i:roU", "z'i:rO:", "s'i:rO:", "z'ErO:"),
    "one": ("v'Vn", "w'0n", "w'an", "v'an"),
    "two": ("t'U",),
    "three": ("sr'i:", "Tr'I", "sr'I"),
    "four": ("f'O:r", "f'Or", "f'O:"),
    "five": ("f'aIf",),
    "six": ("s'i:ks", "z'Iks", "z'i:ks", "s'Eks"),
    "seven": ("s'EvEn", "z'Ev@n", "s'Ef@n", "s'Eb@n"),
    "eight": ("'Et", "'EIt"),
    "nine": ("n'aIn@",),
    "yes": ("dZ'Es", "j'Ez"),
    "no": ("n'O:", "n'0"),
    "up": ("'0p", "'ap"),
    "left": ("l'Ef",),
    "right": ("r'aId",),
    "on": ("'O:n", "'On"),
    "off": ("'O:f", "'Of"),
    "stop": ("Est'0p", "st'O:p", "st'ap"),
    "go": ("g'O:",),
}


def draw_variant(label: str, rng: np.random.Generator, share: float) -> str:
    """eSpeak phonemes of an accented way to say `label`, for a `share` of draws; else ""
    (the engine's own way). Words without variants always get ""."""
    variants = ACCENT_VARIANTS.get(label, ())
    if not variants or share <= 0 or rng.random() >= share:
        return ""
    return variants[int(rng.integers(len(variants)))]
