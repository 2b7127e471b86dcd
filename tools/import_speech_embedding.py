"""Import Google's speech_embedding trunk into edgetune's `sembed` net, checked against the ONNX.

    python tools/import_speech_embedding.py                # models/sembed.pt and models/sembed.md
    edgetune finetune --base models/sembed.pt --data corpus/digits --augment light --edge-cut 0.5 --out runs/d

The weights come from `embedding_model.onnx` in the openWakeWord 0.4.0 wheel on PyPI
(Apache-2.0; Google's TF Hub speech_embedding/1 re-implemented by openWakeWord). The wheel
is fetched with `pip download` unless --onnx names the file. The graph's convolutions are
copied in order into the torch trunk, and its one batch norm folded into a fixed
per-channel affine; the two then embed the same random features and must agree to
--tolerance. Writes a checkpoint (stage `base`) with the trunk and an untrained head for
--labels (fine-tuning gives the head the data's labels), and its model card beside it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WHEEL = "openwakeword==0.4.0"
MEMBER = "openwakeword/resources/models/embedding_model.onnx"
BN_EPSILON = 1e-3  # the graph's BatchNormalization epsilon (Keras' default)


def fetch_onnx(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(folder)],
                   check=True)
    wheel = next(folder.glob("openwakeword-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extract(MEMBER, folder)
    return folder / MEMBER


def onnx_layers(path: Path) -> tuple[list[tuple[np.ndarray, np.ndarray | None]], list[np.ndarray]]:
    """The graph's convs ([(weight, bias or None)]) and its batch norm's [scale, bias, mean, var], in order."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    convs, bn = [], []
    for node in graph.node:
        if node.op_type == "Conv":
            convs.append((init[node.input[1]], init[node.input[2]] if len(node.input) > 2 else None))
        elif node.op_type == "BatchNormalization":
            bn = [init[name] for name in node.input[1:]]
    return convs, bn


def load_trunk(model, path: Path) -> None:
    convs, bn = onnx_layers(path)
    mine = [m for stage in model.trunk for m in stage.modules() if isinstance(m, torch.nn.Conv2d)]
    if len(mine) != len(convs):
        sys.exit(f"error: {path} has {len(convs)} convolutions, the sembed trunk {len(mine)}")
    with torch.no_grad():
        for conv, (weight, bias) in zip(mine, convs):
            if tuple(conv.weight.shape) != weight.shape:
                sys.exit(f"error: conv shape {weight.shape} in {path}, {tuple(conv.weight.shape)} in the trunk")
            conv.weight.copy_(torch.from_numpy(weight.copy()))
            if bias is not None:
                conv.bias.copy_(torch.from_numpy(bias.copy()))
        gamma, beta, mean, var = bn
        scale = gamma / np.sqrt(var + BN_EPSILON)
        affine = model.trunk[0][2]
        affine.scale.copy_(torch.from_numpy(scale))
        affine.shift.copy_(torch.from_numpy(beta - mean * scale))


def parity(model, path: Path, n: int = 16) -> float:
    """Largest embedding difference, torch trunk vs the ONNX, on speech-like random features."""
    import onnxruntime as ort

    from edgetune.nets.sembed import INPUT_OFFSET, WINDOW_FRAMES

    rng = np.random.default_rng(0)
    x = rng.normal(-12.0, 3.0, (n, 1, WINDOW_FRAMES, 32)).astype(np.float32)  # ln mel power
    with torch.no_grad():
        ours = model.eval().embeddings(torch.from_numpy(x))[:, 0].numpy()
    trunk_input = (x[:, 0] / np.log(10.0) + INPUT_OFFSET)[..., None].astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {session.get_inputs()[0].name: trunk_input})[0].reshape(n, -1)
    return float(np.abs(ours - theirs).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "sembed.pt", help="The checkpoint to write (.pt).")
    ap.add_argument("--onnx", type=Path, help=f"embedding_model.onnx [default: fetched from {WHEEL}].")
    ap.add_argument("--labels", default=None, help="Comma-separated labels of the head "
                    "[default: the built-in `all` corpus's].")
    ap.add_argument("--tolerance", type=float, default=1e-3)
    args = ap.parse_args()

    from edgetune.files import write_text_atomic
    from edgetune.frontend import FrontEnd
    from edgetune.nets import create_model
    from edgetune.train.checkpoint import make_checkpoint, save_checkpoint

    labels = args.labels.split(",") if args.labels else all_corpus_labels()
    fe = FrontEnd.preset("sembed")
    model = create_model("sembed", n_classes=len(labels), n_frames=fe.n_frames, n_mels=fe.n_mels)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.onnx or fetch_onnx(Path(tmp))
        load_trunk(model, path)
        error = parity(model, path)
    print(f"trunk vs {path.name}: largest embedding difference {error:.2e}")
    if error > args.tolerance:
        sys.exit(f"error: the imported trunk differs from the ONNX by {error:.2e} (> {args.tolerance})")
    source = str(args.onnx) if args.onnx else f"{WHEEL}:{MEMBER}"
    ckpt = make_checkpoint(model, labels=labels, frontend=fe, stage="base",
                           recipe={"command": " ".join(sys.argv), "trunk": source},
                           metrics={"trunk_parity_max_abs": error})
    save_checkpoint(ckpt, args.out)
    write_text_atomic(args.out.with_suffix(".md"), model_card(args.out, ckpt, model, source, error))
    print(f"wrote {args.out}; next: edgetune finetune --base {args.out} --data DIR --augment light --out RUN")


def model_card(path: Path, ckpt: dict, model, source: str, error: float) -> str:
    fe, meta = ckpt["frontend"], ckpt["meta"]
    trunk_params = sum(p.numel() for stage in model.trunk for p in stage.parameters())
    return "\n".join([
        f"# sembed base model (`models/{path.name}`)",
        "",
        ("Google's speech_embedding trunk (Lin et al. 2020, \"Training keyword spotters with limited and "
        "synthesized speech data\"), trained by Google on a large corpus of **real** speech, with a small head "
        "to train on your labels: `edgetune finetune --base models/sembed.pt`. The trunk stays frozen; only the "
        "head learns (the same 128-unit network at every position of the clip, over three neighbouring "
        "embeddings, then the strongest position and the classifier), so a head trained on edgetune's synthetic voices "
        "keeps what the trunk learnt from real ones. The head here is untrained: this file is a base, not a "
        "recogniser."),
        "",
        "| | |",
        "|---|---|",
        f"| params | {meta['params']:,} (trunk {trunk_params:,}, frozen) |",
        f"| MACs per 1 s clip | {meta['macs']:,} |",
        f"| file size | {path.stat().st_size / 1024:.0f} KB |",
        (f"| front end | {fe['n_mels']} {fe['mel_scale'].capitalize()} mel bands {fe['f_min']:g}-{fe['f_max']:g} Hz, "
         f"{fe['window_ms']:g} ms window, {fe['hop_ms']:g} ms hop, {fe['clip_seconds']:g} s clips "
         "(`FrontEnd.preset(\"sembed\")`) |"),
        f"| trunk source | `{source}` |",
        f"| trunk parity | largest embedding difference to the ONNX: {error:.1e} |",
        "",
        "## Licence",
        ("The trunk's weights are Google's `speech_embedding/1` (TF Hub, Apache-2.0), as re-implemented in ONNX "
        "by openWakeWord (Apache-2.0 code; its own wake-word models, CC BY-NC-SA 4.0, are not used)."),
        "",
        "## Recipe",
        (f"`python tools/import_speech_embedding.py` ({meta['created']}, edgetune {meta['edgetune']}, "
        f"torch {meta['torch']}). Fine-tuned results on real voices: README, \"A trunk that has heard real people\"."),
        "",
    ])


def all_corpus_labels() -> list[str]:
    """Placeholders until the head is trained: fine-tuning gives it the data's labels anyway."""
    from edgetune.data.synth.corpus import task_labels

    words, with_unknown = task_labels("all")
    return sorted(["_silence_", *words, *(["_unknown_"] if with_unknown else [])])


if __name__ == "__main__":
    main()
