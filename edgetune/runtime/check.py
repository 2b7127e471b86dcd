"""`edgetune listen --check`: a live acceptance test of a model on the user's own voice.

The user is prompted to say each label in turn; what the streaming engine
detects in the window after the prompt is the answer (the first detection; none
is a miss). The result: accuracy, per-label recall and what each label was heard
as, judged against the model's accuracy goal. `save` keeps each prompted
utterance in the layout `edgetune record` writes, ready for fine-tuning.
"""

from __future__ import annotations

import os

from edgetune.errors import DataError
from edgetune.runtime.model import NON_EVENTS
from edgetune.runtime.record import (
    VOICE_MIN_DB,
    Capture,
    ClipFolder,
    EndOfInput,
    SessionUI,
    prompt_window,
    take_from,
)
from edgetune.runtime.stream import StreamEngine, run_stream
from edgetune.runtime.verify import DEFAULT_MIN_ACCURACY

NOTHING = "(nothing)"  # the answer when no detection came in the window


def check(
    engine: StreamEngine,
    capture: Capture,
    count: int = 3,
    labels: list[str] | None = None,
    ui: SessionUI | None = None,
    seconds: float = 2.0,
    countdown: int = 2,
    save: str | os.PathLike | None = None,
    speaker: str = "me",
    min_accuracy: float | None = None,
) -> dict:
    """Prompt each label `count` times (round-robin) and score the detections; JSON-ready."""
    ui = ui or SessionUI()
    rec = engine.rec
    events = [lab for lab in rec.labels if lab not in NON_EVENTS]
    labels = list(labels or events)
    unknown = sorted(set(labels) - set(events))
    if unknown:
        raise DataError(f"labels {unknown} are not events of {rec.path}; it knows {events}")
    if min_accuracy is None:
        min_accuracy = rec.min_accuracy if rec.min_accuracy is not None else DEFAULT_MIN_ACCURACY
    folder = ClipFolder(save, speaker) if save is not None else None
    fe = rec.frontend
    hop = round(fe.sample_rate * engine.settings.hop_ms / 1000)
    order = [lab for _ in range(count) for lab in labels]
    trials, ended = [], "done"
    try:
        for i, label in enumerate(order):
            ui.prompt(label, i + 1, len(order))
            audio = prompt_window(capture, ui, label, seconds, countdown)
            engine.reset()  # each prompt is heard on its own: no smoothing or suppression carried over
            found = run_stream(engine, audio, chunk=hop)
            d = found[0] if found else None
            trial = {
                "label": label,
                "heard": d.label if d else NOTHING,
                "confidence": round(float(d.confidence), 4) if d else None,
                "time_s": round(d.time_s, 3) if d else None,
                "saved": None,
            }
            if folder is not None:
                take = take_from(label, audio, fe.sample_rate, VOICE_MIN_DB, fe.clip_seconds)
                if take is not None:
                    trial["saved"] = str(folder.write(label, take.clip, take.sample_rate))
            trials.append(trial)
            ui.note(_trial_line(trial))
    except EndOfInput:
        ended = "input ended"
    except KeyboardInterrupt:
        ended = "interrupted"
    return _score(trials, labels, float(min_accuracy), rec, engine, capture, ended, save)


def _trial_line(t: dict) -> str:
    if t["heard"] == NOTHING:
        return f"said {t['label']!r}: heard nothing"
    mark = "right" if t["heard"] == t["label"] else "WRONG"
    return f"said {t['label']!r}: heard {t['heard']!r} ({t['confidence']:.2f}), {mark}"


def _score(trials, labels, min_accuracy, rec, engine, capture, ended, save) -> dict:
    n = len(trials)
    correct = sum(t["heard"] == t["label"] for t in trials)
    per_label = {}
    for lab in labels:
        mine = [t for t in trials if t["label"] == lab]
        heard: dict[str, int] = {}
        for t in mine:
            heard[t["heard"]] = heard.get(t["heard"], 0) + 1
        hits = heard.get(lab, 0)
        per_label[lab] = {
            "n": len(mine),
            "correct": hits,
            "recall": hits / len(mine) if mine else None,
            "heard": heard,
        }
    accuracy = correct / n if n else None
    return {
        "model": rec.path,
        "source": capture.source,
        "n": n,
        "correct": correct,
        "accuracy": accuracy,
        "per_label": per_label,
        "min_accuracy": min_accuracy,
        "passed": bool(accuracy is not None and accuracy >= min_accuracy),
        "ended": ended,
        "saved_to": None if save is None else str(save),
        "settings": engine.settings.to_dict(),
        "trials": trials,
    }


def format_check(r: dict) -> str:
    width = max([5] + [len(lab) for lab in r["per_label"]])
    lines = [f"{'label':<{width}}  recall    n  heard as"]
    for lab, c in r["per_label"].items():
        rec = "    -" if c["recall"] is None else f"{100 * c['recall']:5.1f}"
        heard = ", ".join(f"{k} {v}" for k, v in sorted(c["heard"].items(), key=lambda kv: -kv[1]))
        lines.append(f"{lab:<{width}}  {rec}  {c['n']:3d}  {heard}")
    lines.append("")
    if r["ended"] != "done":
        lines.append(f"stopped early ({r['ended']}) after {r['n']} prompts")
    if r["accuracy"] is None:
        lines.append("no prompts were answered")
    else:
        lines.append(
            f"accuracy  {100 * r['accuracy']:.1f}% ({r['correct']}/{r['n']}), goal "
            f"{100 * r['min_accuracy']:.1f}%: {'PASS' if r['passed'] else 'FAIL'}"
        )
    if r["saved_to"]:
        lines.append(f"utterances saved in {r['saved_to']} (fine-tune with --data {r['saved_to']})")
    return "\n".join(lines)


def failure_message(r: dict) -> str:
    if r["accuracy"] is None:
        return "the check heard no prompts; is the microphone on? (see `edgetune listen --list-devices`)"
    return (
        f"live accuracy {100 * r['accuracy']:.1f}% is below the goal of {100 * r['min_accuracy']:.1f}% "
        f"({r['model']}); record your voice with `edgetune record` and fine-tune on it"
    )
