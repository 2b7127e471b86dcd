"""Quantization-aware training to int8 with torchao's PT2E flow (FINDINGS.md).

The float network is captured with `torch.export(strict=True)` (without strict
the quantizer sees no source functions and silently inserts nothing), prepared
with the X86 quantizer's QAT config (conv+BN folded and simulated, per-channel
symmetric int8 weights, uint8 activations with learned EMA ranges), trained
with distillation from the float model, then converted to a QDQ graph that the
ONNX export turns into int8 convolutions in onnxruntime.

A QAT checkpoint stores the float architecture plus the prepared graph's
state_dict (weights and observer ranges); `qat_model_from_checkpoint` rebuilds
the graph the same way and loads it, so nothing is pickled.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

from edgetune.errors import ModelError

# Weights use 7 of int8's 8 bits (-64..63). x86 CPUs without VNNI (AVX2: most laptops
# before 2019, AMD before Zen 4) add uint8 x int8 products in saturating int16 pairs; with
# 8-bit weights onnxruntime's int8 convolutions there disagree with torch (measured on an
# AVX2 EPYC: max logit error 1.4, 91% top-1 agreement). 255 * 64 * 2 fits in int16. The
# weights, unlike activations, are constants in the file, so the ONNX graph keeps them in
# range exactly (onnxruntime's own quantizer calls this reduce_range). QAT trains with it.
WEIGHT_BITS = 7
SCHEME = {"scheme": "qdq-int8", "per_channel": True, "weights": "int8-symmetric",
          "weight_bits": WEIGHT_BITS, "activations": "uint8-affine",
          "quantizer": "torchao.pt2e.X86InductorQuantizer"}


class QATModel(nn.Module):
    """A prepared PT2E graph that behaves like an nn.Module for training and eval.

    Exported graphs ignore .train()/.eval(); torchao's move_exported_model_to_*
    switch batch norm and dropout instead. Eval also freezes the int8 ranges: torchao
    leaves the observers on, so every evaluation moved the activation ranges towards the
    clips it scored (measured on a merged model: three passes over one validation set
    scored 93.6, 93.5, 93.2%), the model QAT kept on validation was not the one saved, and
    the saved ranges had seen the test clips. `calibrate` turns them on explicitly."""

    def __init__(self, graph: torch.fx.GraphModule, arch: str, arch_config: dict):
        super().__init__()
        self.graph = graph
        self.arch, self.arch_config = arch, dict(arch_config)

    def train(self, mode: bool = True):
        from torchao.quantization.pt2e import (
            disable_observer,
            enable_observer,
            move_exported_model_to_eval,
            move_exported_model_to_train,
        )

        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.graph)
        self.graph.apply(enable_observer if mode else disable_observer)
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


def example_input(n_frames: int, n_mels: int, batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, 1, n_frames, n_mels)


def capture(model: nn.Module, n_frames: int, n_mels: int) -> torch.fx.GraphModule:
    """torch.export with a dynamic batch, strict (see module docstring)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(model, (example_input(n_frames, n_mels),),
                               dynamic_shapes=({0: batch},), strict=True).module()


def count_fake_quant(graph: nn.Module) -> int:
    return sum(1 for m in graph.modules() if "FakeQuantize" in type(m).__name__)


def quantization_config(weight_bits: int):
    import dataclasses

    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    config = xiq.get_default_x86_inductor_quantization_config(is_qat=True)
    half = 2 ** (weight_bits - 1)
    return dataclasses.replace(config, weight=dataclasses.replace(config.weight, quant_min=-half,
                                                                  quant_max=half - 1))


def with_switchable_dropout(model: nn.Module) -> nn.Module:
    """A copy of `model` whose channel dropout (Dropout1d/2d/3d, as in BC-ResNet's blocks)
    is element dropout of the same rate. Those modules export to aten.feature_dropout, which
    torchao's move_exported_model_to_eval does not switch off: left in, the QAT model and the
    torch reference of an int8 export keep dropping channels in eval (measured on BC-ResNet-3:
    two evaluations of one batch differed by 0.1 in the logits, and export's parity check
    failed on 2.8% of clips). Element dropout exports to aten.dropout, which it does switch."""
    import copy

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)):
                setattr(parent, name, nn.Dropout(child.p))
    return model


class OnnxQDQQuantizer(X86InductorQuantizer):
    """The X86 quantizer, plus a quantized output for every int8 pattern that nothing after
    it quantizes.

    The X86 quantizer leaves a conv's output in float when its consumer runs in float
    (Inductor fuses int8-in, float-out); onnxruntime only turns DequantizeLinear -> Conv ->
    QuantizeLinear into an int8 QLinearConv, so such a conv ran in float. sembed's convs all
    feed a leaky ReLU (float): exported without this, its int8 file had no int8 conv. The
    CNNs whose patterns feed quantized inputs (DS-CNN, BC-ResNet) are unchanged."""

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        from torchao.quantization.pt2e.quantizer.utils import get_output_act_qspec

        model = super().annotate(model)
        for node in model.graph.nodes:
            note = node.meta.get("quantization_annotation")
            if note is None or not getattr(note, "_is_output_of_quantized_pattern", False) or note.output_qspec:
                continue
            if not any(_quantizes_input(user, node) for user in node.users):
                note.output_qspec = get_output_act_qspec(self.global_config)
        return model


def _quantizes_input(user: torch.fx.Node, node: torch.fx.Node) -> bool:
    note = user.meta.get("quantization_annotation")
    return note is not None and note.input_qspec_map.get(node) is not None


def prepare_qat(model: nn.Module, n_frames: int, n_mels: int, weight_bits: int = WEIGHT_BITS) -> QATModel:
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    quantizer = OnnxQDQQuantizer()
    quantizer.set_global(quantization_config(weight_bits))
    with warnings.catch_warnings():
        # a max-pool after an op the quantizer leaves in float (sembed's leaky floor) stays
        # float too; torchao warns of it with its whole config, once per pool
        warnings.filterwarnings("ignore", message="The input of maxpool2d is not quantized")
        graph = prepare_qat_pt2e(capture(with_switchable_dropout(model).train(), n_frames, n_mels), quantizer)
    if count_fake_quant(graph) == 0:
        raise ModelError(f"{model.arch}: the quantizer inserted no fake-quant modules; "
                         "the int8 model would be fp32 (report this as a bug)")
    return QATModel(graph, model.arch, model.arch_config).train()


def calibrate(qat: QATModel, features: torch.Tensor, batch_size: int = 64) -> QATModel:
    """Set the activation ranges from `features` with the network in eval form, before QAT
    trains. Left to the first training batches, the ranges start wrong and the first steps
    train against them: BC-ResNet-3 lost 3 points of validation accuracy in QAT (96.7% float,
    93.4% after 2 epochs), while the same graph calibrated here, untrained, scored 96.5%."""
    from torchao.quantization.pt2e import enable_observer

    qat.eval()
    qat.graph.apply(enable_observer)
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            qat(features[start:start + batch_size])
    return qat.train()


def convert(qat: QATModel) -> torch.fx.GraphModule:
    """The QDQ graph for export (fake-quant replaced by quantize/dequantize ops)."""
    import copy

    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    qat.eval()
    converted = convert_pt2e(copy.deepcopy(qat.graph))
    # The graph's ops are in eval form already (qat.eval()); the flag, which the exported
    # graph cannot switch with .eval(), is set directly so export does not warn of training mode.
    converted.training = False
    return converted


def qat_model_from_checkpoint(ckpt: dict) -> QATModel:
    from edgetune.frontend import FrontEnd
    from edgetune.nets import create_model

    if not ckpt.get("quant"):
        raise ModelError("not a QAT checkpoint (no `quant` entry); run `edgetune compress` first")
    fe = FrontEnd.from_dict(ckpt["frontend"])
    float_model = create_model(ckpt["arch"], n_classes=len(ckpt["labels"]), n_frames=fe.n_frames,
                               n_mels=fe.n_mels, **ckpt["arch_config"])
    # checkpoints from before the 7-bit weights were trained with 8
    qat = prepare_qat(float_model, fe.n_frames, fe.n_mels, ckpt["quant"].get("weight_bits", 8))
    qat.load_state_dict(ckpt["state_dict"])
    return qat.eval()
