"""eSpeak NG through the espeakng-loader wheel, via ctypes.

One library instance per process (eSpeak keeps global state), opened lazily on
first use, so a forked or spawned worker opens its own. Every foreign function
has its argtypes/restype set. Output mode is AUDIO_OUTPUT_SYNCHRONOUS: the synth
callback collects int16 samples and `espeak_Synth` returns when the text is done.

Reproducibility: eSpeak's output depends on everything said before in the process
(pitch flutter index, wave phase, echo buffer, filter state; measured: the same
word after a different previous word differs by samples in length), and neither
`espeak_ng_SetRandSeed` nor Terminate + Initialize resets it. So, where the OS
can fork, a small helper process is forked right after `espeak_Initialize`; it
forks a short-lived child per call (the caller and the helper never speak), so
every utterance starts from the same pristine state: bit-identical output
whatever was said before. The helper is small, so a call costs a few ms more;
the caller's memory (a Piper session, say) is never forked. Without fork
(Windows), calls run in-process and eSpeak clips are not bit-reproducible.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import pickle
import struct

import numpy as np

from edgetune.data.synth.process import PerProcess

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_CHARS_UTF8 = 1
ESPEAK_PHONEMES = 0x100  # enables [[phoneme]] input
POS_CHARACTER = 1
PHONEMES_IPA = 0x02
EE_OK = 0

RATE, VOLUME, PITCH, RANGE, WORDGAP = 1, 2, 3, 4, 7


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakUnavailable(RuntimeError):
    pass


def _stop_zygote(req_w: int, resp_r: int, pid: int, owner: int) -> None:
    """At exit: close the helper's pipe (it exits on EOF) and reap it, so no zombie is left."""
    if os.getpid() != owner:
        return
    for fd in (req_w, resp_r):
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.waitpid(pid, 0)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        b = os.read(fd, min(n - got, 1 << 20))
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


class Espeak(PerProcess):
    """A thin, typed handle on libespeak-ng. Use `Espeak.get()` (one per process)."""

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError as e:
            raise EspeakUnavailable("espeakng-loader is not installed (pip install 'edgetune[synth]')") from e
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path().encode()

        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None

        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if rate <= 0:
            raise EspeakUnavailable(f"espeak_Initialize failed ({rate})")
        self.lib = lib
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, events):
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: the library holds a raw pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._voice_name: bytes | None = None
        self.isolate = hasattr(os, "fork")
        self._zygote = None
        if self.isolate:
            self._start_zygote()

    def _run(self, fn, *args) -> bytes:
        """fn(*args) -> bytes, from the pristine state when isolating (see the module docstring)."""
        if not self.isolate:
            return fn(*args)
        if self._zygote is None or self._zygote[2] != os.getpid():
            self._start_zygote()
        req_w, resp_r, _, _ = self._zygote
        payload = pickle.dumps((fn.__name__, args))
        _write_all(req_w, struct.pack("<Q", len(payload)) + payload)
        head = _read_exact(resp_r, 9)
        if len(head) < 9:
            self._zygote = None
            raise RuntimeError("eSpeak helper process died")
        ok, n = head[0], struct.unpack("<Q", head[1:])[0]
        data = _read_exact(resp_r, n)
        if not ok:
            raise RuntimeError(f"eSpeak failed: {data.decode(errors='replace')}")
        return data

    def _start_zygote(self) -> None:
        """Fork a small helper right now (before anything else is loaded or said): it forks a
        fresh child per request, so every call starts from the state just after Initialize
        and the (possibly large) caller's memory is never forked or copied on write."""
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(req_w)
                os.close(resp_r)
                self._zygote_loop(req_r, resp_w)
            except BaseException:  # noqa: BLE001 - a forked child must never return
                code = 1
            finally:
                os._exit(code)
        os.close(req_r)
        os.close(resp_w)
        self._zygote = (req_w, resp_r, os.getpid(), pid)
        atexit.register(_stop_zygote, req_w, resp_r, pid, os.getpid())

    def _zygote_loop(self, req_r: int, resp_w: int) -> None:
        while True:
            head = _read_exact(req_r, 8)
            if len(head) < 8:
                return  # the caller went away
            name, args = pickle.loads(_read_exact(req_r, struct.unpack("<Q", head)[0]))
            child = os.fork()
            if child == 0:
                code = 0
                try:
                    try:
                        out, ok = getattr(self, name)(*args), 1
                    except Exception as e:  # noqa: BLE001 - reported to the caller
                        out, ok = f"{type(e).__name__}: {e}".encode(), 0
                    _write_all(resp_w, bytes([ok]) + struct.pack("<Q", len(out)) + out)
                except BaseException:  # noqa: BLE001 - a forked child must never return
                    code = 1
                finally:
                    os._exit(code)
            _, status = os.waitpid(child, 0)
            if status != 0:
                msg = b"child process crashed"
                _write_all(resp_w, bytes([0]) + struct.pack("<Q", len(msg)) + msg)

    def list_voices(self, variants: bool = False) -> list[dict]:
        spec = None
        if variants:
            spec = _Voice()
            spec.languages = b"variant"
        arr = self.lib.espeak_ListVoices(ctypes.byref(spec) if spec is not None else None)
        out = []
        i = 0
        while arr[i]:
            v = arr[i].contents
            langs = v.languages or b""
            # languages: a sequence of (priority byte, name, NUL), ending with an empty name
            raw = ctypes.string_at(v.languages, 64) if v.languages else b""
            names = []
            pos = 0
            while pos < len(raw) and raw[pos] != 0:
                end = raw.find(b"\0", pos + 1)
                names.append(raw[pos + 1 : end].decode(errors="replace"))
                pos = end + 1
            del langs
            out.append({
                "name": (v.name or b"").decode(errors="replace"),
                "identifier": (v.identifier or b"").decode(errors="replace"),
                "languages": names,
                "gender": int(v.gender),
            })
            i += 1
        return out

    def set_voice(self, name: str) -> None:
        b = name.encode()
        if b == self._voice_name:
            return
        if self.lib.espeak_SetVoiceByName(b) != EE_OK:
            raise ValueError(f"eSpeak has no voice {name!r}")
        self._voice_name = b

    # -- synthesis ----------------------------------------------------------
    def synth(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int,
              phonemes: bool = False, seed: int = 0) -> np.ndarray:
        """int16 mono audio at self.sample_rate. `phonemes`: text may contain [[...]] phoneme input."""
        data = self._run(self._synth, text, voice, rate, pitch, pitch_range, phonemes, seed)
        return np.frombuffer(data, dtype=np.int16).copy()

    def _synth(self, text, voice, rate, pitch, pitch_range, phonemes, seed) -> bytes:
        self.set_voice(voice)
        # SetVoiceByName resets parameters, so set them every time
        self.lib.espeak_ng_SetRandSeed(int(seed))
        self.lib.espeak_SetParameter(RATE, int(rate), 0)
        self.lib.espeak_SetParameter(PITCH, int(pitch), 0)
        self.lib.espeak_SetParameter(RANGE, int(pitch_range), 0)
        self.lib.espeak_SetParameter(VOLUME, 100, 0)
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        flags = ESPEAK_CHARS_UTF8 | (ESPEAK_PHONEMES if phonemes else 0)
        self._chunks = []
        rc = self.lib.espeak_Synth(buf, len(buf), 0, POS_CHARACTER, 0, flags, None, None)
        if rc != EE_OK:
            raise RuntimeError(f"espeak_Synth failed ({rc}) for {text!r}")
        self.lib.espeak_Synchronize()
        chunks, self._chunks = self._chunks, []
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return audio.astype("<i2").tobytes()

    def phonemize(self, text: str, voice: str) -> str:
        """IPA for `text` in `voice`'s language (clauses joined by spaces)."""
        return self._run(self._phonemize, text, voice).decode("utf-8")

    def _phonemize(self, text, voice) -> bytes:
        self.set_voice(voice)
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        parts = []
        while ptr.value:
            res = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), ESPEAK_CHARS_UTF8, PHONEMES_IPA)
            if res:
                parts.append(res.decode("utf-8", errors="replace").strip())
        return " ".join(p for p in parts if p).encode("utf-8")
