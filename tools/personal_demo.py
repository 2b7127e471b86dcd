"""Issue #10's must-show, end to end: a synthetic user whose voice is in no training split
speaks into the virtual microphone (DESIGN.md), and the user's loop runs as `edgetune`
commands: `record` captures the prompted words, `listen --check` scores fresh takes with
the base model (and `--save` keeps them as the user's held-out clips), `finetune` runs the
personal recipe, `export` makes the new model, `listen --check` scores the same takes again,
and `verify` scores both models on the held-out clips and on the built-in test split.

    OMP_NUM_THREADS=1 python tools/personal_demo.py --base runs/v_light/finetuned.pt \\
        --out runs/personal_demo                 # ~10 min on one core

The user: Piper's `en_US-joe-medium` with a vocal-tract warp of 0.70 (every Piper speaker of
the built-in corpus is drawn from 0.84-1.20), its own length/noise settings and one room
(EQ, reverb, level), speaker name `joe` (no corpus speaker has it). Writes OUT/demo.json:
the commands, and before/after accuracy on the user's held-out clips and the built-in test
voices; `passed` when the user's held-out accuracy rose and the built-in test accuracy
fell by no more than 1 point. `--source file` answers the prompts from session files
(`--file`) instead of the microphone, in this process (no PulseAudio needed; the fast test
in tests/test_personal.py runs the chain so).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SR = 16000
# the user's voice (see the module docstring)
USER_VOICE = {"warp": 0.70, "length_scale": 1.6, "noise_scale": 0.6, "noise_w": 0.8}
ONSET_S = 0.3  # where a take starts in its window, in session files


def piper_user(seed: int = 10, voice: dict | None = None) -> Callable:
    """render(label, rng) -> one 1 s take of the held-out Piper user, in the user's room."""
    from edgetune.data.synth import effects
    from edgetune.data.synth.corpus import ClipPlan, get_engine, make_word, render_clip
    from edgetune.data.synth.engines import Voice

    v = Voice("piper", "joe-user", dict(voice or USER_VOICE))
    engine = get_engine("piper")
    room = np.random.default_rng(seed)
    eq, reverb = effects.draw_eq(room), effects.draw_reverb(room, p_room=1.0)

    def render(label: str, rng: np.random.Generator) -> np.ndarray:
        word = make_word(label)
        fx = {
            "speed": 1.0,
            "eq": eq,
            "reverb": reverb,
            "level": {"rms_dbfs": float(rng.uniform(-24, -16)), "floor_dbfs": -62.0},
            "onset": effects.draw_onset(rng),
        }
        utt = engine.draw(v, word, rng)
        plan = ClipPlan(label, 0, word, "piper", v, utt, fx, int(rng.integers(2**62)))
        return render_clip(plan)[0]

    return render


def write_takes(root: Path, labels: list[str], n: int, render: Callable, seed: int) -> dict:
    """n takes per label as wav files under root/<label>/; {label: [paths]}."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    out: dict[str, list[Path]] = {}
    for lab in labels:
        out[lab] = []
        for k in range(n):
            path = root / lab / f"take{k:03d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, render(lab, rng), SR, subtype="PCM_16")
            out[lab].append(path)
    return out


def session_file(path: Path, order: list[str], takes: dict, window: float, lead: float = 0.0):
    """A recorded session answering the prompts in `order` with the next take of each label."""
    import soundfile as sf

    nxt = {lab: iter(paths) for lab, paths in takes.items()}
    parts = [np.zeros(round(lead * SR), np.float32)]
    for lab in order:
        w = np.zeros(round(window * SR), np.float32)
        clip = sf.read(next(nxt[lab]), dtype="float32")[0]
        start = round(ONSET_S * SR)
        w[start : start + len(clip)] = clip
        parts.append(w)
    sf.write(path, np.concatenate(parts), SR, subtype="PCM_16")
    return path


def held_out_check(corpus: Path | None, speaker: str, voice: dict) -> dict:
    """Evidence that the user is no corpus speaker: names, and the corpus's Piper warps."""
    if corpus is None or not (corpus / "corpus.csv").exists():
        return {"corpus": str(corpus) if corpus else None}
    speakers, warps = set(), []
    with open(corpus / "corpus.csv", newline="") as f:
        for row in csv.DictReader(f):
            speakers.add(row["speaker"])
            if row.get("engine") == "piper":
                warps.append(json.loads(row["params"])["voice"]["warp"])
    return {
        "corpus": str(corpus),
        "corpus_speakers": len(speakers),
        "user_speaker_in_corpus": speaker in speakers,
        "corpus_piper_warp": [min(warps), max(warps)] if warps else None,
        "user_warp": voice.get("warp"),
        "user_warp_in_corpus_range": bool(warps) and min(warps) <= voice["warp"] <= max(warps),
    }


class Demo:
    def __init__(self, out: Path, source: str, log=print):
        self.out, self.source, self.log = out, source, log
        self.commands: list[str] = []
        self.mic = None

    def edgetune(self, args, answers: dict | None = None) -> dict:
        """Run `edgetune ARGS --json`; with `answers` ({label: [wav]}), answer each prompt
        with the next take (microphone: played when prompted; file: a session file)."""
        args = [str(a) for a in args]
        shown = "edgetune " + " ".join(args)
        if answers is not None and self.source == "file":
            order = self._prompt_order(args)
            sess = session_file(self.out / f"session-{len(self.commands)}.wav", order, answers,
                                float(_opt(args, "--window")), float(_opt(args, "--background", 0)))  # fmt: skip
            args += ["--file", str(sess)]
            shown += f" --file {sess}"
        self.commands.append(shown)
        self.log(f"$ {shown}")
        cmd = [sys.executable, "-m", "edgetune", *args, "--json"]
        t0 = time.perf_counter()
        if answers is not None and self.source == "mic":
            vmic = _tool("vmic")
            nxt = {lab: iter(paths) for lab, paths in answers.items()}
            code, out, err, _ = vmic.drive_prompts(
                cmd, self.mic, lambda lab: next(nxt[lab], None), timeout=900
            )
        elif self.source == "file":  # in this process: no microphone, no start-up per command
            from click.testing import CliRunner

            from edgetune.cli import cli

            r = CliRunner().invoke(cli, [*args, "--json"])
            if r.exception is not None and not isinstance(r.exception, SystemExit):
                raise r.exception
            code, out, err = r.exit_code, r.stdout, r.stderr
        else:
            import subprocess

            r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
            code, out, err = r.returncode, r.stdout, r.stderr
        lines = [ln for ln in out.strip().splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"{shown} failed ({code}):\n{err[-3000:]}")
        res = json.loads(lines[-1])
        res["_exit"], res["_seconds"] = code, round(time.perf_counter() - t0, 1)
        self.log(f"  exit {code}, {res['_seconds']} s")
        return res

    @staticmethod
    def _prompt_order(args) -> list[str]:
        labels = _opt(args, "--labels").split(",")
        return [lab for _ in range(int(_opt(args, "--count"))) for lab in labels]


def _opt(args: list[str], name: str, default=None):
    return args[args.index(name) + 1] if name in args else default


def _tool(name: str):
    if name not in sys.modules:
        import importlib.util

        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_demo(
    base: str | Path,
    out: str | Path,
    labels: list[str],
    render: Callable,
    takes: int = 10,
    check_count: int = 20,
    speaker: str = "joe",
    source: str = "mic",
    window: float = 2.5,
    finetune_args: list[str] | None = None,
    seed: int = 0,
    voice: dict | None = None,
    log=print,
) -> dict:
    """The whole loop (module docstring); returns and writes OUT/demo.json."""
    import torch

    base, out = Path(base), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = torch.load(base, map_location="cpu", weights_only=True).get("meta") or {}
    corpus = (meta.get("data") or {}).get("source")
    corpus = Path(corpus) if corpus and Path(corpus).is_dir() else None
    if corpus is None:
        raise SystemExit(f"error: {base} names no corpus on this machine to score its test split")
    t0 = time.perf_counter()
    record_takes = write_takes(out / "takes" / "record", labels, takes, render, seed + 1)
    check_takes = write_takes(out / "takes" / "check", labels, check_count, render, seed + 2)
    log(f"rendered {takes} + {check_count} takes a word in {time.perf_counter() - t0:.0f} s")

    demo = Demo(out, source, log)
    result: dict = {"base": str(base), "labels": labels, "speaker": speaker, "source": source,
                    "voice": voice, "held_out": held_out_check(corpus, speaker, voice or {})}  # fmt: skip
    mic = _tool("vmic").VirtualMic() if source == "mic" else None
    try:
        if mic is not None:
            demo.mic = mic.start()
        base_onnx = out / "base-fp32.onnx"
        demo.edgetune(["export", "--onnx", base, "--out", base_onnx])
        voice_dir, held_dir, run = out / "my_voice", out / "heldout", out / "personal"
        common = ["--labels", ",".join(labels), "--countdown", "0", "--window", window]
        rec = demo.edgetune(
            ["record", *common, "--count", takes, "--out", voice_dir, "--speaker", speaker,
             "--background", "2", "--yes"], record_takes)  # fmt: skip
        result["record"] = {k: rec[k] for k in ("counts", "missed", "ended", "source")}
        check = ["--check", *common, "--count", check_count, "--min-accuracy", "0"]
        check += ["--threads", "1"]
        before = demo.edgetune(["listen", base_onnx, *check, "--save", held_dir,
                                "--speaker", speaker], check_takes)  # fmt: skip
        ft = demo.edgetune(["finetune", "--data", voice_dir, "--base", base, "--out", run,
                            *(finetune_args or [])])  # fmt: skip
        if ft["_exit"] != 0 or not ft.get("personal"):
            raise RuntimeError(f"finetune did not run the personal recipe: {ft}")
        after_onnx = Path(demo.edgetune(["export", "--onnx", run / "finetuned.pt"])["onnx"])
        after = demo.edgetune(["listen", after_onnx, *check], check_takes)
        scores = {}
        for name, model in (("before", base_onnx), ("after", after_onnx)):
            v = ["verify", model, "--min-accuracy", "0", "--threads", "1"]
            scores[name] = {
                "user": demo.edgetune([*v, "--data", held_dir, "--split", "all"]),
                "corpus": demo.edgetune([*v, "--data", corpus, "--split", "test"]),
            }
    finally:
        if mic is not None:
            mic.stop()

    def acc(r):
        return round(r["accuracy"], 4)

    ub, ua = acc(scores["before"]["user"]), acc(scores["after"]["user"])
    cb, ca = acc(scores["before"]["corpus"]), acc(scores["after"]["corpus"])
    result.update({
        "user_heldout_clips": scores["before"]["user"]["n"],
        "user_heldout_before": ub,
        "user_heldout_after": ua,
        "check_before": round(before["accuracy"], 4),
        "check_after": round(after["accuracy"], 4),
        "check_trials": before["n"],
        "check_heard": {"before": {lab: c["heard"] for lab, c in before["per_label"].items()},
                        "after": {lab: c["heard"] for lab, c in after["per_label"].items()}},
        "corpus_test_clips": scores["before"]["corpus"]["n"],
        "corpus_test_before": cb,
        "corpus_test_after": ca,
        "finetune": {k: ft.get(k) for k in (
            "user_clips", "corpus_clips", "freeze", "epochs", "user_test_before",
            "user_test_after", "corpus_test_before", "corpus_test_after", "mix")},
        "seconds": round(time.perf_counter() - t0, 1),
        "commands": demo.commands,
    })  # fmt: skip
    result["passed"] = ua > ub and cb - ca <= 0.01 + 1e-9
    (out / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="runs/v_light/finetuned.pt")
    p.add_argument("--out", default="runs/personal_demo")
    p.add_argument("--labels", default="a,e,o")
    p.add_argument("--takes", type=int, default=10, help="recorded takes per word")
    p.add_argument("--check-count", type=int, default=20, help="held-out takes per word")
    p.add_argument("--speaker", default="joe")
    p.add_argument("--source", choices=["mic", "file"], default="mic")
    p.add_argument("--window", type=float, default=2.5)
    p.add_argument("--warp", type=float, default=USER_VOICE["warp"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--finetune-args", default="", help="extra `edgetune finetune` options")
    a = p.parse_args(argv)
    voice = {**USER_VOICE, "warp": a.warp}
    r = run_demo(a.base, a.out, a.labels.split(","), piper_user(voice=voice), takes=a.takes,
                 check_count=a.check_count, speaker=a.speaker, source=a.source, window=a.window,
                 finetune_args=a.finetune_args.split(), seed=a.seed, voice=voice)  # fmt: skip
    print(f"user held-out clips ({r['user_heldout_clips']}): {r['user_heldout_before']:.1%} -> "
          f"{r['user_heldout_after']:.1%}; listen --check {r['check_before']:.1%} -> "
          f"{r['check_after']:.1%}; built-in test ({r['corpus_test_clips']}): "
          f"{r['corpus_test_before']:.1%} -> {r['corpus_test_after']:.1%}; "
          f"{'PASS' if r['passed'] else 'FAIL'}")  # fmt: skip
    print(json.dumps({k: v for k, v in r.items() if k != "commands"}))
    return 0 if r["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
