"""`edgetune merge`: several fine-tuned models as one multi-head model; `edgetune soup`:
several copies of one model as their weight average (torch)."""

from __future__ import annotations

import click

from edgetune.cli.common import echo_json, int_list, progress_enabled
from edgetune.errors import EdgetuneError


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _blocks(shared) -> str:
    if isinstance(shared, int):
        return f"{shared} blocks"
    return "blocks per head " + ",".join(str(d) for d in shared)


def _data_overrides(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise EdgetuneError(f"--data {item!r}: write it as HEAD=DIR, e.g. --data digits=corpus/digits")
        out[name] = path
    return out


def _depths(ctx, param, value: str | None) -> int | list[int] | None:
    depths = int_list(value, "3 or 3,4,4")
    return depths if depths is None or len(depths) > 1 else depths[0]


@click.command()
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--out", required=True, type=click.Path(path_type=str), help="The merged checkpoint (.pt).")
@click.option("--names", help="Head names, comma-separated [default: each model's dataset folder name].")
@click.option("--data", "data", multiple=True, metavar="HEAD=DIR",
              help="A head's dataset, where its model's recorded one moved (repeatable).")
@click.option("--distill", is_flag=True, help="Distil into one shared trunk even when the models "
                                              "share early blocks exactly.")
@click.option("--shared", callback=_depths, help="Blocks the distilled student shares; each head keeps "
              "its own copy of the rest, started from its teacher. One number, or one per head (3,4,4: "
              "the first head branches off after 3 blocks, the others share a 4th) [default: all].")
@click.option("--trunk-from", metavar="HEAD", help="Start the shared blocks from this head's model alone "
              "(the hardest task: it starts exactly as its own model) [default: the models averaged].")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=2e-3, show_default=True, type=float)
@click.option("--distill-alpha", default=0.7, show_default=True, type=click.FloatRange(0, 1),
              help="Weight of the teachers' soft labels in the student's loss (the rest: its own labels).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--seed", default=0, show_default=True)
@click.option("--nproc", type=click.IntRange(1), help="Train on N processes (launches torchrun; DDP).")
@click.option("--json", "as_json", is_flag=True)
def merge(checkpoints, out, names, data, distill, shared, trunk_from, epochs, batch_size, lr, distill_alpha,
          device, seed, nproc, as_json) -> None:
    """One model for several tasks: a shared trunk, one head per input model.

    Models fine-tuned from one base with their first blocks frozen share those blocks
    exactly (nothing is trained); otherwise one trunk is distilled from all of them."""
    from edgetune.cli.host import _command_line, _quiet_unless_main, _relaunched

    if _relaunched(nproc):
        return
    from edgetune.train.loop import TrainConfig
    from edgetune.train.merge import merge as run

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, distill_alpha=distill_alpha, device=device, seed=seed)
    result = run(list(checkpoints), out, names=names.split(",") if names else None,
                 data=_data_overrides(data), distill=distill, shared=shared, trunk_from=trunk_from, cfg=cfg,
                 command=_command_line(), progress=progress_enabled())
    if _quiet_unless_main():
        return
    if as_json:
        echo_json({k: v for k, v in result.items() if k != "history"})
        return
    click.echo(f"merged {len(result['heads'])} models ({result['how']}, {_blocks(result['shared_blocks'])} shared): "
               f"{result['params']:,} params vs {result['params_separate']:,} apart, "
               f"{result['macs']:,} MACs vs {result['macs_separate']:,}")
    if result["trunk_passes"] > 1:
        click.echo(f"  the heads differ in band-mean removal: the trunk runs {result['trunk_passes']} times "
                   "per window, once per input")
    for head in result["heads"]:
        click.echo(f"  {head:<12} test {_pct(result['test_accuracy'][head])}"
                   f"  (its own model {_pct(result['own_model_test_accuracy'][head])})")
    click.echo(f"wrote {result['checkpoint']}; next: edgetune compress {result['checkpoint']}")


@click.command()
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--out", required=True, type=click.Path(path_type=str), help="The averaged checkpoint (.pt).")
@click.option("--data", "data", multiple=True, metavar="DIR|HEAD=DIR",
              help="The dataset, where the recorded one moved: a folder, or HEAD=DIR per head of a "
                   "merged model (repeatable).")
@click.option("--json", "as_json", is_flag=True)
def soup(checkpoints, out, data, as_json) -> None:
    """Average copies of one network that started from the same weights (a greedy soup).

    For runs of one recipe with different --seed: fine-tunes of one base, or compress
    runs of one model (average their pruned.pt, then `compress SOUP --ratio 0` for int8).
    The copy best on validation starts; each next joins only if validation does not drop."""
    from edgetune.train.soup import greedy_soup

    if len(checkpoints) < 2:
        raise click.UsageError("give two or more checkpoints to average")
    if len(data) == 1 and "=" not in data[0]:
        source = data[0]
    else:
        source = _data_overrides(data) or None
    result = greedy_soup(list(checkpoints), out, source, say=(lambda m: None) if as_json else click.echo)
    if as_json:
        echo_json(result)
        return
    for i, (path, s) in enumerate(zip(checkpoints, result["each"])):
        mark = "*" if i in result["members"] else " "
        click.echo(f" {mark} {path}: val {_pct(s['val_accuracy'])}  test {_pct(s['test_accuracy'])}")
    click.echo(f"soup of {len(result['members'])} (*): val {_pct(result['val_accuracy'])}  "
               f"test {_pct(result['test_accuracy'])}")
    for head, acc in result.get("test_accuracy_per_head", {}).items():
        click.echo(f"  {head:<12} test {_pct(acc)}")
    quantize_only = " --ratio 0" if result["stage"] == "pruned" else ""  # pruned already: QAT only
    click.echo(f"wrote {out}; next: edgetune compress {out}{quantize_only}")


COMMANDS: list[click.Command] = [merge, soup]
