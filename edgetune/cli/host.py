"""Host-side commands (torch): models, finetune, evaluate, compress, export."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from edgetune.cli.common import echo_json, int_list, progress_enabled
from edgetune.compress.config import DEFAULT_RATIO, CompressConfig

COMPRESS = CompressConfig()  # the defaults `compress` shows and uses


def _command_line() -> str:
    return "edgetune " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _relaunched(nproc: int | None) -> bool:
    """With --nproc N outside torchrun: run this same command under torchrun, then stop."""
    from edgetune.train import distributed

    if not nproc or nproc == 1 or distributed.active():
        return False
    code = distributed.launch(nproc, distributed.strip_nproc(sys.argv[1:]))
    if code:
        raise SystemExit(code)
    return True


def _quiet_unless_main() -> bool:
    from edgetune.train import distributed

    return not distributed.is_main()


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


@click.command()
@click.option("--json", "as_json", is_flag=True)
def models(as_json: bool) -> None:
    """List the architectures, with params and MACs for the default front end."""
    from edgetune.nets import available_models, describe, model_info

    if as_json:
        echo_json({"models": [model_info(name) for name in available_models()]})
        return
    click.echo(describe())
    from edgetune.paths import REPO_MODELS

    shipped = sorted(REPO_MODELS.glob("*.pt"))
    if shipped:
        click.echo("\nshipped base checkpoints: " + ", ".join(f"models/{p.name}" for p in shipped))


@click.command()
@click.option("--data", required=True, type=click.Path(path_type=str), help="Dataset folder or CSV.")
@click.option("--base", type=click.Path(path_type=str), help="Base checkpoint (models/NAME.pt).")
@click.option("--model", "model_name", help="Architecture to train from scratch instead (see `edgetune models`).")
@click.option("--out", required=True, type=click.Path(path_type=str), help="Run folder.")
@click.option("--epochs", default=20, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=3e-3, show_default=True, type=float)
@click.option("--conv-lr-scale", default=1.0, show_default=True, type=float,
              help="Learning rate of the convolutions relative to the head's.")
@click.option("--freeze", default=0, show_default=True, type=click.IntRange(0),
              help="Keep the first N blocks fixed.")
@click.option("--label-smoothing", default=0.1, show_default=True, type=float)
@click.option("--augment", type=click.Choice(["light", "default", "strong"]), default="default",
              show_default=True, help="Training augmentation: light suits the built-in corpus, "
                                      "strong suits tens of clips of one voice.")
@click.option("--noise-snr", nargs=2, type=float, default=None, metavar="LO HI",
              help="Background noise SNR range in dB, instead of the preset's. A device in a "
                   "noisier place than the data wants it lower: 0 30 for the built-in streams.")
@click.option("--noise-prob", type=click.FloatRange(0, 1), default=None,
              help="Share of clips with background noise, instead of the preset's.")
@click.option("--edge-cut", type=click.FloatRange(0, 1), default=None,
              help="Share of clips trimmed as a silence remover trims a recording (a word's weak "
                   "first and last sounds gone), instead of the preset's: for clips cut tight to "
                   "the word, such as the Free Spoken Digit Dataset's.")
@click.option("--cmn/--no-cmn", default=None,
              help="Remove each mel band's mean over the window inside the model (cepstral mean "
                   "normalisation): microphones and rooms matter less. Default: on, except with the "
                   "music front end (a held note's band means are the note).")
@click.option("--teacher", type=click.Path(path_type=str), help="Distil from this checkpoint.")
@click.option("--adversarial", type=click.Choice(["fgsm", "pgd"]), help="Adversarial training.")
@click.option("--epsilon", default=0.5, show_default=True, type=float, help="Log-mel perturbation size.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--seed", default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--compare-scratch", is_flag=True, help="Also train from random weights with the same budget.")
@click.option("--nproc", type=click.IntRange(1), help="Train on N processes (launches torchrun; DDP).")
@click.option("--auto", "auto_trials", type=click.IntRange(2), default=None, is_flag=False, flag_value=4,
              help="Search N trials (default 4) over lr, --freeze, --conv-lr-scale; pick on validation.")
@click.option("--soup", is_flag=True, help="With --auto: average the weights of the best trials "
                                           "(greedy soup; never below the best trial on validation).")
@click.option("--personal/--no-personal", default=None,
              help="The recipe for tens of clips of your voice (default: on with --base when the "
                   "data has under 30 clips per word).")
@click.option("--mix", type=click.Path(path_type=str, file_okay=False),
              help="With --personal: corpus to mix in (default: the base's own, when present).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def finetune(ctx, data, base, model_name, out, epochs, batch_size, lr, conv_lr_scale, freeze,
             label_smoothing, augment, noise_snr, noise_prob, edge_cut, cmn, teacher, adversarial, epsilon, device, seed, resume,
             compare_scratch, nproc, auto_trials, soup, personal, mix, as_json) -> None:
    """Adapt a base model to your labels (or train one from scratch).

    Runs unchanged under `torchrun --nproc-per-node N` (DistributedDataParallel).
    With a base and a few clips of your voice (`edgetune record`), it switches to the personal
    recipe and reports your held-out takes and the built-in test voices, before and after."""
    if _relaunched(nproc):
        return
    if personal is None and base and not (model_name or auto_trials or resume or teacher or nproc):
        from edgetune.train.personal import is_tiny

        personal = is_tiny(data)
    if personal:
        _personal(ctx, data, base, out, mix, as_json)
        return
    from edgetune.data.augment import AugmentConfig
    from edgetune.train.finetune import finetune as run
    from edgetune.train.loop import TrainConfig

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, conv_lr_scale=conv_lr_scale,
                      freeze=freeze, label_smoothing=label_smoothing, adversarial=adversarial,
                      epsilon=epsilon, device=device, seed=seed,
                      augment=AugmentConfig.preset(augment).with_noise(noise_snr, noise_prob)
                      .with_edge_cut(edge_cut))

    quiet = _quiet_unless_main()  # under torchrun, rank 0 speaks for all

    def show(r):
        if not as_json and not quiet:
            click.echo(f"epoch {r['epoch']:>3}  loss {r['train_loss']:.3f}  train {_pct(r['train_accuracy'])}"
                       f"  val {_pct(r['val_accuracy'])}  ({r['samples_per_s']:.0f} clips/s)")

    kwargs = {"base": base, "model_name": model_name, "teacher": teacher, "cmn": cmn,
              "command": _command_line(), "progress": progress_enabled(),
              "on_epoch": None if auto_trials else show}
    if soup and not auto_trials:
        raise click.UsageError("--soup averages the trials of --auto N; add --auto")
    if auto_trials:
        from edgetune.train.search import auto_finetune

        result = auto_finetune(data, out, trials=auto_trials, cfg=cfg, soup=soup,
                               say=(lambda m: None) if as_json else click.echo, **kwargs)
    else:
        result = run(data, out, cfg=cfg, resume=resume, scratch_baseline=compare_scratch, **kwargs)
    if quiet:
        return
    if as_json:
        echo_json({k: v for k, v in result.items() if k != "history"})
        return
    click.echo(f"before fine-tuning (base, test): {_pct(result['base_test_accuracy'])}")
    if "scratch_test_accuracy" in result:
        click.echo(f"from scratch, same budget (test): {_pct(result['scratch_test_accuracy'])}")
    if "soup_trials" in result:
        single = result["best_single_trial"]
        click.echo(f"best single trial (test):         {_pct(single['test_accuracy'])}"
                   f"   (val {_pct(single['val_accuracy'])})")
        click.echo(f"soup of trials {result['soup_trials']}:")
    click.echo(f"after fine-tuning (test):         {_pct(result['test_accuracy'])}"
               f"   (val {_pct(result['val_accuracy'])})")
    click.echo(f"wrote {result['checkpoint']}; next: edgetune compress {result['checkpoint']} --data {data}")


def _personal(ctx, data, base, out, mix, as_json) -> None:
    from edgetune.errors import EdgetuneError
    from edgetune.train.personal import PersonalConfig, personal_finetune

    if not base:
        raise EdgetuneError("--personal fine-tunes a base model; give --base RUN/finetuned.pt")
    # the personal recipe's own defaults, except where the user set an option
    given = {k: v for k, v in ctx.params.items()
             if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    cfg = PersonalConfig(**{k: given[k] for k in ("epochs", "batch_size", "lr", "conv_lr_scale",
                                                  "freeze", "seed", "device") if k in given})

    def show(r):
        if not as_json:
            click.echo(f"epoch {r['epoch']:>3}  loss {r['train_loss']:.3f}  train {_pct(r['train_accuracy'])}"
                       f"  val {_pct(r['val_accuracy'])}")

    if not as_json:
        click.echo(f"personal recipe for {data}: strong augmentation, early blocks frozen, "
                   f"{cfg.epochs} epochs, {cfg.mix_per_label} corpus clips per label mixed in, "
                   f"weights averaged with the base's ({cfg.keep:g} base)")
    r = personal_finetune(data, base, out, mix=mix, cfg=cfg, command=_command_line(),
                          progress=progress_enabled(), on_epoch=show)
    if as_json:
        echo_json({k: v for k, v in r.items() if k != "history"})
        return
    if not r["mix"]:
        click.echo("note: no corpus mixed in (the base's is not here); give --mix DIR so the model "
                   "keeps the other voices")
    u = r["user_clips"]
    click.echo(f"your held-out takes ({u['test']}):   before {_pct(r['user_test_before'])}  "
               f"after {_pct(r['user_test_after'])}")
    if r["mix"]:
        click.echo(f"built-in test voices ({r['corpus_clips']['test']}): before "
                   f"{_pct(r['corpus_test_before'])}  after {_pct(r['corpus_test_after'])}")
    click.echo(f"wrote {r['checkpoint']}; your test takes: {r['user_test_manifest']}")


@click.command()
@click.argument("model", type=click.Path(path_type=str))
@click.option("--data", required=True, type=click.Path(path_type=str))
@click.option("--split", type=click.Choice(["train", "val", "test", "all"]), default="test", show_default=True)
@click.option("--out", type=click.Path(path_type=str), help="Folder for report.json and confusion.png.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def evaluate(model, data, split, out, device, as_json) -> None:
    """Score a checkpoint (.pt) or export (.onnx) on a dataset split."""
    from edgetune.evaluate import evaluate as run
    from edgetune.evaluate import save_confusion_png
    from edgetune.files import write_json_atomic
    from edgetune.runtime.verify import format_report

    report = run(model, data, split=split, device=device, progress=progress_enabled() and not as_json)
    if out:
        write_json_atomic(Path(out, "report.json"), report)
        report["confusion_png"] = save_confusion_png(report, Path(out, "confusion.png"))
    if as_json:
        echo_json(report)
        return
    click.echo(format_report(report))


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=str))
@click.option("--data", type=click.Path(path_type=str), help="Dataset [default: the one the checkpoint records].")
@click.option("--out", type=click.Path(path_type=str), help="Run folder [default: the checkpoint's].")
@click.option("--ratio", type=click.FloatRange(0, 0.95), default=None,
              help=f"Fraction of channels to remove [default {DEFAULT_RATIO} when no budget is given; 0, int8 only, "
                   "for sembed, whose trunk is fixed].")
@click.option("--target-params", type=click.IntRange(1), help="Prune until params <= N.")
@click.option("--target-macs", type=click.IntRange(1), help="Prune until MACs per clip <= N.")
@click.option("--device-profile", "profile", help="Prune to a device profile's model-size budget (int8 bytes).")
@click.option("--widths", callback=lambda ctx, p, v: int_list(v, "64,64,48"),
              help="Prune to exactly these widths, one per layer as the checkpoint's "
                   "arch_config channels lists them (a --shared 3,4,4 merge: the 4 shared, then "
                   "each head's own), e.g. 64,64,64,48,64,64,32,32.")
@click.option("--criterion", type=click.Choice(["l2", "bn_scale"]), default=COMPRESS.criterion, show_default=True)
@click.option("--round-to", default=COMPRESS.round_to, show_default=True, type=click.IntRange(1),
              help="Keep pruned widths multiples of N: onnxruntime's int8 convolutions run 56 channels "
                   "slower than 64 (1: any width).")
@click.option("--steps", default=COMPRESS.steps, show_default=True, type=click.IntRange(1), help="Prune -> recover rounds.")
@click.option("--epochs-per-step", default=COMPRESS.epochs_per_step, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=COMPRESS.lr, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Peak learning rate of the fine-tune that recovers each pruning step.")
@click.option("--qat-epochs", default=COMPRESS.qat_epochs, show_default=True, type=click.IntRange(0),
              help="0: int8 ranges calibrated on training clips, no QAT training")
@click.option("--qat-lr", default=COMPRESS.qat_lr, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Peak learning rate of QAT (the calibrated start is kept unless an epoch beats it).")
@click.option("--min-accuracy", type=click.FloatRange(0, 1), help="Stop pruning before val accuracy falls under this.")
@click.option("--max-drop", type=click.FloatRange(0, 1), default=COMPRESS.max_drop, show_default=True,
              help="...or under the fine-tuned val accuracy minus this.")
@click.option("--device", default=COMPRESS.device, show_default=True)
@click.option("--seed", default=COMPRESS.seed, show_default=True)
@click.option("--nproc", type=click.IntRange(1), help="Train on N processes (launches torchrun; DDP).")
@click.option("--json", "as_json", is_flag=True)
def compress(checkpoint, data, out, ratio, target_params, target_macs, profile, widths, criterion, round_to, steps,
             epochs_per_step, lr, qat_epochs, qat_lr, min_accuracy, max_drop, device, seed, nproc, as_json) -> None:
    """Prune channels (really removing them), then quantization-aware fine-tune to int8."""
    if _relaunched(nproc):
        return
    from edgetune.compress.pipeline import compress as run
    from edgetune.compress.pipeline import format_stages

    if profile:
        from edgetune.runtime.devices import get_profile

        target_params = target_params or int(get_profile(profile).model_size_budget_kb * 1024)
    if widths and (ratio is not None or target_params or target_macs):
        raise click.UsageError("--widths sets every layer's width: give it without --ratio, "
                               "--target-params, --target-macs or --device-profile")
    cc = CompressConfig(ratio=ratio, target_params=target_params, target_macs=target_macs, widths=widths,
                        criterion=criterion, round_to=round_to, steps=steps, epochs_per_step=epochs_per_step,
                        lr=lr, qat_epochs=qat_epochs, qat_lr=qat_lr, min_accuracy=min_accuracy, max_drop=max_drop,
                        device=device, seed=seed)
    quiet = _quiet_unless_main()
    result = run(checkpoint, data=data, out=out, cc=cc, command=_command_line(),
                 progress=progress_enabled(), log=(lambda m: None) if as_json or quiet else click.echo)
    if quiet:
        return
    if as_json:
        echo_json(result)
        return
    click.echo(format_stages(result["stages"]))
    click.echo(f"wrote {result['pruned']}, {result['qat']}; next: edgetune export --onnx {result['qat']}")


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=str))
@click.option("--onnx", "as_onnx", is_flag=True, default=True, help="ONNX (the only format).")
@click.option("--out", type=click.Path(path_type=str), help="Output file [default: RUN/<stage>-<precision>.onnx].")
@click.option("--data", type=click.Path(path_type=str), help="Clips for the parity check [default: the checkpoint's dataset].")
@click.option("--device", "profile", help="Device profile to record and check against (see `edgetune devices`).")
@click.option("--stream-minutes", type=click.FloatRange(0),
              help="Tune the stream settings `listen` uses on this long a stream of validation voices "
                   "[default: 30; 0 keeps the defaults].")
@click.option("--json", "as_json", is_flag=True)
def export(checkpoint, as_onnx, out, data, profile, stream_minutes, as_json) -> None:
    """Export a checkpoint to one self-describing ONNX file (fp32, or int8 from QAT)."""
    from edgetune.export import export_onnx
    from edgetune.runtime.streameval import format_stream_calibration

    if profile:
        from edgetune.runtime.devices import get_profile

        get_profile(profile)  # an unknown name fails here, before any work
    result = export_onnx(checkpoint, out=out, data=data, device_profile=profile, stream_minutes=stream_minutes)
    if as_json:
        echo_json(result)
        return
    p = result["parity"]
    click.echo(f"wrote {result['onnx']} ({result['precision']}, {result['bytes'] / 1024:.1f} KB, "
               f"{result['int8_convs']} int8 convolutions in onnxruntime)")
    line = f"parity on {p['n']} clips: max |logit diff| {p['max_abs_diff']:.2e}, top-1 agreement {_pct(p['top1_agreement'])}"
    if "onnx_accuracy" in p:
        line += f", accuracy onnx {_pct(p['onnx_accuracy'])} vs torch {_pct(p['torch_accuracy'])}"
    click.echo(line)
    click.echo(format_stream_calibration(result["stream"]))
    data_hint = f" --data {data}" if data else ""
    click.echo(f"next: edgetune verify {result['onnx']}{data_hint}   |   edgetune listen {result['onnx']}")


@click.command()
@click.option("--task", type=click.Choice(["vowels", "commands", "digits"]), default="vowels", show_default=True)
@click.option("--out", type=click.Path(path_type=str), default="runs/quickstart", show_default=True)
@click.option("--clips-per-word", default=200, show_default=True, type=click.IntRange(20))
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(1))
@click.option("--stream-minutes", default=5.0, show_default=True, type=click.FloatRange(0.5))
@click.option("--device-profile", default="x86-64-laptop", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--base", type=click.Path(path_type=str), help="Base checkpoint [default: models/dscnn-s.pt].")
@click.option("--json", "as_json", is_flag=True)
def quickstart(task, out, clips_per_word, epochs, stream_minutes, device_profile, device, base, as_json):
    """The whole pipeline on the built-in corpus: corpus, finetune, compress, export, verify,
    stream, bench, report. Re-running reuses finished stages."""
    from edgetune.quickstart import QuickstartConfig
    from edgetune.quickstart import quickstart as run

    cfg = QuickstartConfig(task=task, out=Path(out), clips_per_word=clips_per_word, epochs=epochs,
                           stream_minutes=stream_minutes, device_profile=device_profile, device=device)
    if base:
        cfg = QuickstartConfig(**{**cfg.__dict__, "base": Path(base)})
    result = run(cfg, say=(lambda m: None) if as_json else click.echo, progress=progress_enabled())
    if as_json:
        echo_json(result)


COMMANDS: list[click.Command] = [models, finetune, evaluate, compress, export, quickstart]
