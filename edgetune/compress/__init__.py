"""Compression: structured pruning (`edgetune.compress.prune`) and quantisation."""

__all__ = ["prune_model", "prune_to_widths", "step_budgets", "step_ratios", "widths_for_ratio"]


def __getattr__(name):  # import Torch-Pruning only when pruning is asked for
    if name in __all__:
        from edgetune.compress import prune

        return getattr(prune, name)
    raise AttributeError(f"module 'edgetune.compress' has no attribute {name!r}")
