"""Host-side commands (torch): models, finetune, evaluate, compress, export."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from edgetune.cli.common import echo_json, progress_enabled


def _command_line() -> str:
    return "edgetune " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


@click.command()
@click.option("--json", "as_json", is_flag=True)
def models(as_json: bool) -> None:
    """List the architectures, with params and MACs for the default front end."""
    from edgetune.nets import describe

    rows = describe()
    if as_json:
        echo_json({"models": rows})
        return
    click.echo(f"{'name':<12} {'params':>9} {'MACs':>12}  description")
    for r in rows:
        click.echo(f"{r['name']:<12} {r['params']:>9,} {r['macs']:>12,}  {r['description']}")
    shipped = sorted(Path(__file__).resolve().parents[2].joinpath("models").glob("*.pt"))
    if shipped:
        click.echo("\nshipped base checkpoints: " + ", ".join(f"models/{p.name}" for p in shipped))


@click.command()
@click.option("--data", required=True, type=click.Path(path_type=str), help="Dataset folder or CSV.")
@click.option("--base", type=click.Path(path_type=str), help="Base checkpoint (models/NAME.pt).")
@click.option("--model", "model_name", help="Architecture to train from scratch instead (see `edgetune models`).")
@click.option("--out", required=True, type=click.Path(path_type=str), help="Run folder.")
@click.option("--epochs", default=15, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=3e-3, show_default=True, type=float)
@click.option("--conv-lr-scale", default=0.3, show_default=True, type=float,
              help="Learning rate of the convolutions relative to the head's.")
@click.option("--freeze", default=0, show_default=True, type=click.IntRange(0),
              help="Keep the first N blocks fixed.")
@click.option("--label-smoothing", default=0.1, show_default=True, type=float)
@click.option("--teacher", type=click.Path(path_type=str), help="Distil from this checkpoint.")
@click.option("--adversarial", type=click.Choice(["fgsm", "pgd"]), help="Adversarial training.")
@click.option("--epsilon", default=0.5, show_default=True, type=float, help="Log-mel perturbation size.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--seed", default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--compare-scratch", is_flag=True, help="Also train from random weights with the same budget.")
@click.option("--json", "as_json", is_flag=True)
def finetune(data, base, model_name, out, epochs, batch_size, lr, conv_lr_scale, freeze,
             label_smoothing, teacher, adversarial, epsilon, device, seed, resume, compare_scratch,
             as_json) -> None:
    """Adapt a base model to your labels (or train one from scratch)."""
    from edgetune.train.finetune import finetune as run
    from edgetune.train.loop import TrainConfig

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, conv_lr_scale=conv_lr_scale,
                      freeze=freeze, label_smoothing=label_smoothing, adversarial=adversarial,
                      epsilon=epsilon, device=device, seed=seed)

    def show(r):
        if not as_json:
            click.echo(f"epoch {r['epoch']:>3}  loss {r['train_loss']:.3f}  train {_pct(r['train_accuracy'])}"
                       f"  val {_pct(r['val_accuracy'])}  ({r['samples_per_s']:.0f} clips/s)")

    result = run(data, out, base=base, model_name=model_name, cfg=cfg, teacher=teacher, resume=resume,
                 scratch_baseline=compare_scratch, command=_command_line(), progress=progress_enabled(),
                 on_epoch=show)
    if as_json:
        echo_json({k: v for k, v in result.items() if k != "history"})
        return
    click.echo(f"before fine-tuning (base, test): {_pct(result['base_test_accuracy'])}")
    if "scratch_test_accuracy" in result:
        click.echo(f"from scratch, same budget (test): {_pct(result['scratch_test_accuracy'])}")
    click.echo(f"after fine-tuning (test):         {_pct(result['test_accuracy'])}"
               f"   (val {_pct(result['val_accuracy'])})")
    click.echo(f"wrote {result['checkpoint']}; next: edgetune compress {result['checkpoint']} --data {data}")


@click.command()
@click.argument("model", type=click.Path(path_type=str))
@click.option("--data", required=True, type=click.Path(path_type=str))
@click.option("--split", type=click.Choice(["train", "val", "test", "all"]), default="test", show_default=True)
@click.option("--out", type=click.Path(path_type=str), help="Folder for report.json and confusion.png.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def evaluate(model, data, split, out, device, as_json) -> None:
    """Score a checkpoint (.pt) or export (.onnx) on a dataset split."""
    import json

    from edgetune.evaluate import evaluate as run
    from edgetune.evaluate import save_confusion_png
    from edgetune.metrics import format_report

    report = run(model, data, split=split, device=device, progress=progress_enabled() and not as_json)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, "report.json").write_text(json.dumps(report, indent=2))
        report["confusion_png"] = save_confusion_png(report, Path(out, "confusion.png"))
    if as_json:
        echo_json(report)
        return
    click.echo(format_report(report))
    click.echo(f"\naccuracy {_pct(report['accuracy'])} on {report['n']} clips ({split})")


COMMANDS: list[click.Command] = [models, finetune, evaluate]
