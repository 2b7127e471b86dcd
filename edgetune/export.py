"""`edgetune export --onnx`: one self-describing ONNX file, fp32 or int8, parity-checked.

fp32 comes from any float checkpoint, int8 from a QAT checkpoint (QDQ graph).
The file carries labels, front end, precision, stream settings, goal, metrics
and lineage as metadata (DESIGN.md "ONNX contract"). After writing, it is run
in onnxruntime on real clips and compared with torch; an int8 export whose
optimized onnxruntime graph has no int8 convolutions is refused.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from edgetune.errors import ModelError
from edgetune.frontend import FrontEnd

ONNX_FORMAT = "edgetune.onnx/1"
OPSET = 18
DEFAULT_STREAM = {"hop_ms": 100, "average_ms": 600, "threshold": 0.7, "suppress_ms": 1000}
DEFAULT_GOAL = {"min_accuracy": 0.90}
# of validation stream, ~390 words: at most 2 false accepts an hour allows one. On 10 minutes
# it allows none, and one stray accept there can push the threshold to where the test stream
# finds 3% of the words (sembed, commands: 30 min gives 68-70%; README "Noise, and words in
# a stream"). About 2 minutes for sembed int8, 1 for DS-CNN-S, on one core.
CALIBRATION_MINUTES = 30.0
INT8_CONV_OPS = {"QLinearConv", "ConvInteger"}
FP32_MAX_DIFF = 1e-4
# torch's fake-quant reference sums in float, onnxruntime in integers: an activation on a
# rounding boundary lands one step apart, and the steps add up along a chain of int8 layers.
# Measured: DS-CNN-S (5 convs) agrees on 99.6% of clips; sembed (20 convs) on 98.1% at equal
# accuracy (91.31% vs 91.39% of 1347 clips). A broken int8 kernel shows far lower (AVX2
# saturation with 8-bit weights: 91%), and the accuracy it loses is checked as well.
INT8_MIN_AGREEMENT = 0.98
INT8_MAX_ACCURACY_GAP = 0.005


def metadata(ckpt: dict, precision: str, lineage: list[dict], stream: dict | None = None,
             goal: dict | None = None, device: str | None = None) -> dict[str, str]:
    props = {
        "edgetune.format": ONNX_FORMAT,
        "edgetune.labels": ckpt["labels"],
        "edgetune.frontend": ckpt["frontend"],
        "edgetune.precision": precision,
        "edgetune.stream": stream or DEFAULT_STREAM,
        "edgetune.goal": goal or DEFAULT_GOAL,
        "edgetune.metrics": ckpt["meta"].get("metrics", {}),
        "edgetune.lineage": lineage,
        "edgetune.arch": {"arch": ckpt["arch"], "params": ckpt["meta"].get("params"),
                          "macs": ckpt["meta"].get("macs")},
    }
    if ckpt.get("heads"):  # a merged model: one output per head, each with its labels
        props["edgetune.heads"] = [{"name": h["name"], "labels": h["labels"], "output": f"logits_{h['name']}"}
                                   for h in ckpt["heads"]]
    if device:
        props["edgetune.device"] = device
    return {k: json.dumps(v) for k, v in props.items()}


def output_names(ckpt: dict) -> list[str]:
    return [f"logits_{h['name']}" for h in ckpt["heads"]] if ckpt.get("heads") else ["logits"]


class _HeadOutputs(torch.nn.Module):
    """A merged model's concatenated logits as one output per head."""

    def __init__(self, model: torch.nn.Module, sizes: list[int]):
        super().__init__()
        self.model, self.sizes = model, list(sizes)
        self.training = False  # set directly: the int8 graph inside refuses .eval()

    def train(self, mode: bool = True):  # see _Converted: the graph inside has nothing to switch
        return self

    def forward(self, x):
        return tuple(torch.split(self.model(x), self.sizes, dim=1))


def for_export(model: torch.nn.Module, ckpt: dict) -> torch.nn.Module:
    if not ckpt.get("heads"):
        return model
    return _HeadOutputs(model, [len(h["labels"]) for h in ckpt["heads"]])


def lineage_of(path: Path, ckpt: dict) -> list[dict]:
    """This checkpoint's hash and stage, then its recorded ancestors (one link each)."""
    from edgetune.train.checkpoint import sha256_file

    chain = [{"sha256": sha256_file(path), "stage": ckpt["meta"]["stage"]}]
    parent = ckpt["meta"].get("parent")
    while parent:
        chain.append({"sha256": parent["sha256"], "stage": parent["stage"]})
        parent = parent.get("parent")
    return chain


class _Converted(torch.nn.Module):
    """A converted (int8 QDQ) graph as a module whose .eval() is harmless: exported
    graphs refuse train/eval switches, and a converted graph has nothing to switch."""

    def __init__(self, graph):
        super().__init__()
        self.graph = graph

    def train(self, mode: bool = True):
        return self

    def forward(self, x):
        return self.graph(x)


def torch_model(ckpt: dict) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """(model to export, torch reference for parity, precision). For int8 the reference
    is the converted QAT model (integer weights, the QAT-learned activation ranges):
    exactly what the ONNX file should compute."""
    from edgetune.train.checkpoint import model_from_checkpoint

    if ckpt.get("quant"):
        from edgetune.compress.qat import convert, qat_model_from_checkpoint

        converted = convert(qat_model_from_checkpoint(ckpt))
        return converted, _Converted(converted), "int8"
    model = model_from_checkpoint(ckpt).eval()
    return model, model, "fp32"


def to_onnx(model: torch.nn.Module, fe: FrontEnd, path: Path, props: dict[str, str],
            outputs: list[str] | None = None) -> None:
    import onnx

    # the exporter warns, one line per operator, that torchvision (not needed here) is absent
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    x = torch.randn(2, 1, fe.n_frames, fe.n_mels)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates each step
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=OPSET,
                                    input_names=["features"], output_names=outputs or ["logits"],
                                    dynamic_shapes=({0: batch},), verbose=False)
    proto = program.model_proto
    # The exporter annotates every node with Python stack and module paths: debug
    # data that can be half the file on a small model. A device needs none of it.
    graph = proto.graph
    del graph.metadata_props[:]
    for item in (*graph.node, *graph.initializer, *graph.input, *graph.output, *graph.value_info):
        del item.metadata_props[:]
    del graph.value_info[:]  # intermediate shapes: onnxruntime infers them
    compact_names(graph)
    drop_default_attributes(graph, next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")))
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        onnx.save_model(proto, tmp, save_as_external_data=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def compact_names(graph) -> None:
    """Short names for every inner tensor and none for nodes: the exporter's names
    (module paths, per quantize/dequantize step) are a sizeable share of a small int8
    file, and a device needs none of them. Inputs and outputs keep their names."""
    keep = {v.name for v in (*graph.input, *graph.output)}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for t in graph.initializer:
        t.name = short(t.name)
    for node in graph.node:
        node.name = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
        if any(a.type == a.GRAPH for a in node.attribute):
            raise ModelError("the exported graph has subgraphs; edgetune exports plain CNNs only")


# Conv attributes whose absence the ONNX spec defines as these values, one per axis
# (the schema states it in words, so it has no default_value to compare against)
_CONV_UNIT_ATTRIBUTES = {"strides": 1, "dilations": 1, "pads": 0}


def drop_default_attributes(graph, opset: int) -> None:
    """Remove attributes that only restate their default (a Conv's unit strides and
    dilations, zero pads, group 1, auto_pad NOTSET; a quantizer's axis 1): the exporter
    writes every one out, and on a small int8 model they are 3-5% of the file."""
    from onnx import defs, helper

    for node in graph.node:
        try:
            schema = defs.get_schema(node.op_type, opset, node.domain)
        except defs.SchemaError:
            continue
        kept = []
        for a in node.attribute:
            value = helper.get_attribute_value(a)
            spec = schema.attributes.get(a.name)
            default = spec.default_value if spec is not None else None
            if default is not None and default.type and helper.get_attribute_value(default) == value:
                continue
            unit = _CONV_UNIT_ATTRIBUTES.get(a.name) if node.op_type == "Conv" and not node.domain else None
            if unit is not None and all(v == unit for v in value):
                continue
            kept.append(a)
        if len(kept) < len(node.attribute):
            del node.attribute[:]
            node.attribute.extend(kept)


def optimized_ops(path: Path) -> Counter:
    """Op types of the graph onnxruntime actually runs (after its optimizations)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(Path(d) / "optimized.onnx")
        so.log_severity_level = 3
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        graph = onnx.load(so.optimized_model_filepath).graph
    return Counter(n.op_type for n in graph.node)


def _head_clips(targets: np.ndarray, a: int, b: int) -> np.ndarray:
    """Which clips belong to the head whose classes are columns a..b-1."""
    return (targets >= a) & (targets < b)


def _accuracy(logits: np.ndarray, targets: np.ndarray, slices: list[tuple[int, int]]) -> float:
    """Each clip answered by the head its target belongs to."""
    right = 0
    for a, b in slices:
        mine = _head_clips(targets, a, b)
        right += int((logits[mine, a:b].argmax(1) + a == targets[mine]).sum())
    return right / len(targets)


def int8_agrees(differ: int, n: int) -> bool:
    """At least INT8_MIN_AGREEMENT of top-1 answers equal; int8 rounding may flip one
    borderline clip, which on a small set alone is over 1%."""
    return differ <= max(1.0, (1 - INT8_MIN_AGREEMENT) * n)


def parity(path: Path, reference: torch.nn.Module, features: np.ndarray, targets: np.ndarray | None,
           precision: str, slices: list[tuple[int, int]] | None = None) -> dict:
    """Compare onnxruntime with torch on the same features."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    # a merged model has one output per head: side by side they are the torch logits
    ort_logits = np.concatenate([np.concatenate(session.run(None, {"features": features[i : i + 256]}), axis=1)
                                 for i in range(0, len(features), 256)])
    reference.eval()
    with torch.no_grad():
        ref_logits = torch.cat([reference(torch.from_numpy(features[i : i + 256]))
                                for i in range(0, len(features), 256)]).numpy()
    slices = slices or [(0, ref_logits.shape[1])]
    # a head is compared on its own task's clips: on another task's clips its answers are
    # near-ties that mean nothing, and int8 rounding flips them freely
    differ = []
    for a, b in slices:
        mine = _head_clips(targets, a, b) if targets is not None and len(slices) > 1 else slice(None)
        differ.append(int((ort_logits[mine, a:b].argmax(1) != ref_logits[mine, a:b].argmax(1)).sum()))
    out = {"n": len(features),
           "max_abs_diff": float(np.abs(ort_logits - ref_logits).max()),
           "top1_agreement": 1.0 - sum(differ) / max(len(features), 1)}
    if targets is not None and len(targets):
        out["onnx_accuracy"] = _accuracy(ort_logits, targets, slices)
        out["torch_accuracy"] = _accuracy(ref_logits, targets, slices)
    if precision == "fp32":
        out["passed"] = out["max_abs_diff"] <= FP32_MAX_DIFF
    else:
        loss = out.get("torch_accuracy", 0) - out.get("onnx_accuracy", 0)
        out["passed"] = int8_agrees(sum(differ), len(features)) and int8_keeps_accuracy(loss, len(features))
    return out


def int8_keeps_accuracy(loss: float, n: int) -> bool:
    """The device path loses at most INT8_MAX_ACCURACY_GAP of torch's accuracy (on a few
    hundred clips one clip is more: at least one clip is allowed). Only a loss fails: the
    clips that flip either way are bounded by `int8_agrees`, and a gain is what `verify`
    will report (sembed, commands: onnx 92.5% vs torch 92.0% of 721 clips, 99.2% agreeing)."""
    return loss <= max(INT8_MAX_ACCURACY_GAP, 1.0 / max(n, 1) + 1e-9)


def parity_inputs(ckpt: dict, data: str | Path | None, limit: int = 2000):
    """Real features (and targets) from the dataset: the test split, then val; random if none."""
    from edgetune.data.dataset import ClipLoader, load_dataset
    from edgetune.frontend import log_mel

    fe = FrontEnd.from_dict(ckpt["frontend"])
    heads = ckpt.get("heads") or [{"labels": ckpt["labels"]}]
    recorded = ckpt["meta"].get("data", {}).get("source")
    sources = [data] if data and not ckpt.get("heads") else (recorded if ckpt.get("heads") else [recorded])
    if not all(s and Path(s).exists() for s in sources or [None]):
        rng = np.random.default_rng(0)
        return rng.normal(-4, 3, (64, 1, fe.n_frames, fe.n_mels)).astype(np.float32), None, "random"
    feats, targets, offset = [], [], 0
    for source, head in zip(sources, heads):
        ds = load_dataset(source, labels=head["labels"])
        examples = (ds.split("test") + ds.split("val"))[: limit // len(heads)]
        clips = ClipLoader(fe).clips(examples)
        feats += [log_mel(fe, c)[None] for c in clips]
        index = {lab: offset + i for i, lab in enumerate(head["labels"])}
        targets += [index[e.label] for e in examples]
        offset += len(head["labels"])
    return np.stack(feats).astype(np.float32), np.array(targets), ", ".join(map(str, sources))


def export_onnx(checkpoint: str | Path, out: str | Path | None = None, data: str | Path | None = None,
                device_profile: str | None = None, stream_minutes: float | None = None) -> dict:
    """Write, check and stream-calibrate the ONNX file (on `stream_minutes` of validation
    voices, default CALIBRATION_MINUTES; 0: not tuned)."""
    from edgetune.train.checkpoint import load_checkpoint

    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    model, reference, precision = torch_model(ckpt)
    out = Path(out) if out else checkpoint.with_name(f"{checkpoint.stem}-{precision}.onnx")
    fe = FrontEnd.from_dict(ckpt["frontend"])
    props = metadata(ckpt, precision, lineage_of(checkpoint, ckpt), device=device_profile)
    # Checked under a temporary name: a failed check leaves nothing behind.
    staged = out.with_name(f".{out.name}.checking")
    try:
        to_onnx(for_export(model, ckpt), fe, staged, props, output_names(ckpt))
        result = check_export(staged, ckpt, reference, precision, data)
        minutes = CALIBRATION_MINUTES if stream_minutes is None else stream_minutes
        result["stream"] = calibrate_stream(staged, ckpt, data, minutes)
        os.replace(staged, out)
    finally:
        staged.unlink(missing_ok=True)
    return {"onnx": str(out), **result}


def calibrate_stream(path: Path, ckpt: dict, data, minutes: float) -> dict:
    """The stream settings `listen` will use: tuned on the validation voices of the model's
    data (`calibrate_on_split`), or the defaults, with the reason, where that cannot be done."""
    from edgetune.errors import DataError
    from edgetune.runtime.streameval import calibrate_on_split

    source = data or ckpt["meta"].get("data", {}).get("source")
    why = ("not asked (--stream-minutes 0)" if minutes <= 0
           else "a merged model: calibrate each head with `stream-eval --calibrate --head`" if ckpt.get("heads")
           else "the model's dataset is not on this machine" if not (source and Path(source).exists())
           else None)
    if why is None:
        try:
            return calibrate_on_split(path, source, minutes=minutes)
        except DataError as e:  # e.g. no validation clips to make a stream of
            why = str(e)
    return {"saved": False, "settings": DEFAULT_STREAM, "why": why}


def check_export(path: Path, ckpt: dict, reference, precision: str, data) -> dict:
    ops = optimized_ops(path)
    int8_convs = sum(ops[o] for o in INT8_CONV_OPS)
    if precision == "int8" and int8_convs == 0:
        raise ModelError(f"the int8 export runs no int8 convolution in onnxruntime "
                         f"(ops: {dict(ops)}); nothing was written")
    feats, targets, source = parity_inputs(ckpt, data)
    from edgetune.nets.multihead import slices_of

    slices = slices_of(ckpt["arch_config"]) if ckpt.get("heads") else None
    check = parity(path, reference, feats, targets, precision, slices)
    check["inputs"] = source
    if not check["passed"]:
        raise ModelError(f"parity check against torch failed ({json.dumps(check)}); nothing was "
                         "written. Fine-tune longer or report the model as a bug")
    return {"precision": precision, "bytes": path.stat().st_size, "int8_convs": int8_convs,
            "ops": dict(ops), "parity": check, "labels": ckpt["labels"]}
