"""`edgetune report RUN`: one self-contained HTML page about a run, plus its PNGs.

Reads whatever the run folder holds (DESIGN.md "Runs"): stages.json, the stage
checkpoints, log.jsonl, verify.json / verify-base.json, bench.json, stream.json.
Each plot is drawn only when its source exists; the page lists what is missing
and which command makes it. Images are embedded as base64 data URIs, with no
external CSS or JS, so the page reads offline and can be mailed as one file.

Everything is read and drawn in memory first; files are written only once the
whole report is ready (a failing report leaves nothing half-written).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
import tempfile
from pathlib import Path

from edgetune.errors import EdgetuneError

STREAM_SECONDS = 120.0


class ReportError(EdgetuneError):
    """A run folder (or one of its files) that a report cannot be made from."""


# file -> (what it gives the report, the command that makes it)
SOURCES = {
    "stages.json": ("accuracy vs model size across stages",
                    "edgetune compress RUN/finetuned.pt --data DATA"),
    "log.jsonl": ("training curves", "edgetune finetune --data DATA --base BASE.pt --out RUN"),
    "finetuned.pt": ("fine-tuned checkpoint summary",
                     "edgetune finetune --data DATA --base BASE.pt --out RUN"),
    "pruned.pt": ("pruned checkpoint summary", "edgetune compress RUN/finetuned.pt --data DATA"),
    "qat.pt": ("int8 (QAT) checkpoint summary", "edgetune compress RUN/finetuned.pt --data DATA"),
    "verify-base.json": ("confusion matrix before fine-tuning",
                         "edgetune verify BASE.onnx --data DATA --out RUN/verify-base.json"),
    "verify.json": ("confusion matrix after fine-tuning, per-class recall vs the goal",
                    "edgetune verify RUN/qat-int8.onnx --data DATA --out RUN/verify.json"),
    "bench.json": ("latency and real-time factor vs the device budgets",
                   "edgetune bench RUN/qat-int8.onnx --device raspberry-pi-4 --out RUN/bench.json"),
    "stream.json": ("streaming detections on a timeline",
                    ("edgetune stream-eval RUN/qat-int8.onnx --stream S.wav --truth S.csv "
                     "--out RUN/stream.json")),
}
CHECKPOINTS = ("finetuned.pt", "pruned.pt", "qat.pt")


# ------------------------------------------------------------------ reading


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: not readable JSON ({type(e).__name__}: {str(e)[:120]}); "
                          f"re-make it with `{SOURCES[path.name][1]}` or delete it") from None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not readable ({type(e).__name__}); delete it or re-run "
                          "`edgetune finetune`") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ReportError(f"{path}: line {n} is not JSON; the log is damaged, "
                              "re-run `edgetune finetune` or delete the line") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _need(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise ReportError(f"{path}: {what}; re-make it with `{SOURCES[path.name][1]}`")


def _checkpoint_summary(path: Path) -> dict:
    from edgetune.train.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except EdgetuneError as e:
        return {"file": path.name, "error": str(e)}
    meta = ckpt.get("meta", {})
    return {
        "file": path.name,
        "stage": meta.get("stage"),
        "arch": ckpt.get("arch"),
        "labels": ckpt.get("labels"),
        "params": meta.get("params"),
        "macs": meta.get("macs"),
        "metrics": meta.get("metrics", {}),
        "data": (meta.get("data") or {}).get("source"),
        "created": meta.get("created"),
        "quantised": bool(ckpt.get("quant")),
    }


def _stream_parts(stream: dict, run: Path) -> tuple[list[dict] | None, list[dict] | None]:
    """Detections and truth words from a stream-eval result (or a calibrate result)."""
    if isinstance(stream.get("result"), dict) and "best" in stream:
        stream = stream["result"]
    dets = stream.get("detections")
    if not isinstance(dets, list):
        dets = stream.get("detection_list")
    truth = stream.get("truth")
    if isinstance(truth, str):  # stream-eval stores the CSV's path; read it when it is there
        csv = Path(truth)
        if not csv.is_absolute() and not csv.exists():
            csv = run / csv
        if csv.is_file():
            from edgetune.runtime.streameval import read_truth

            try:
                truth = [{"label": w.label, "onset_s": w.onset_s, "offset_s": w.offset_s}
                         for w in read_truth(csv)]
            except EdgetuneError:
                truth = None
        else:
            truth = None
    if not isinstance(dets, list) or not isinstance(truth, list):
        return None, None
    dets = [d for d in dets if isinstance(d, dict) and {"time_s", "label"} <= set(d)]
    truth = [w for w in truth if isinstance(w, dict) and {"label", "onset_s"} <= set(w)]
    return dets, truth


def read_run(run: str | os.PathLike) -> dict:
    """Everything the report uses from RUN, validated; ReportError on an unusable file."""
    run = Path(run)
    if not run.exists():
        raise ReportError(f"{run}: no such run folder; pass the --out folder of "
                          "`edgetune finetune` / `edgetune compress`")
    if not run.is_dir():
        raise ReportError(f"{run}: not a folder; pass the run folder (the --out of "
                          "`edgetune finetune`), not a file in it")
    found: dict = {"run": str(run)}
    p = run / "stages.json"
    if p.is_file():
        stages = _read_json(p)
        _need(isinstance(stages, list) and all(isinstance(r, dict) and "stage" in r for r in stages),
              p, "not a list of stage rows with a 'stage' key")
        found["stages"] = stages
    p = run / "log.jsonl"
    if p.is_file():
        found["log"] = [r for r in _read_jsonl(p) if r.get("epoch") is not None]
    for name in ("verify.json", "verify-base.json"):
        p = run / name
        if p.is_file():
            v = _read_json(p)
            _need(isinstance(v, dict) and {"confusion", "labels", "per_class"} <= set(v), p,
                  "no confusion/labels/per_class (not `edgetune verify --json` output)")
            found[name] = v
    p = run / "bench.json"
    if p.is_file():
        b = _read_json(p)
        _need(isinstance(b, dict) and ("latency_device_threads" in b or "stream" in b), p,
              "no latency figures (not `edgetune bench --json` output)")
        found["bench.json"] = b
    p = run / "stream.json"
    if p.is_file():
        s = _read_json(p)
        _need(isinstance(s, dict), p, "not a JSON object (not `edgetune stream-eval --json` output)")
        found["stream.json"] = s
    found["checkpoints"] = [_checkpoint_summary(run / n) for n in CHECKPOINTS if (run / n).is_file()]
    return found


# ------------------------------------------------------------------ drawing


def _png(fig) -> bytes:
    from edgetune.report.plots import _pyplot

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _figures(found: dict, stream_seconds: float) -> list[dict]:
    """[{name, title, section, source, png}] for every plot whose data exists."""
    from edgetune.report import plots as P

    out = []

    def add(name, title, section, source, fig):
        out.append({"name": name, "file": f"{name}.png", "title": title, "section": section,
                    "source": source, "png": _png(fig)})

    stages = found.get("stages")
    if stages and any(P.stage_bytes(r) and (r.get("test_accuracy") is not None
                                            or r.get("val_accuracy") is not None) for r in stages):
        add("size_accuracy", "Accuracy vs model size", "stages", "stages.json",
            P.size_accuracy_figure(stages))
    if found.get("log"):
        add("training", "Training curves", "training", "log.jsonl", P.training_figure(found["log"]))
    base, after = found.get("verify-base.json"), found.get("verify.json")
    if base:
        add("confusion_before", "Confusion before fine-tuning", "accuracy", "verify-base.json",
            P.confusion_figure(base["confusion"], base["labels"],
                               f"before fine-tuning: acc {_fmt_pct(base.get('accuracy'))}"))
    if after:
        add("confusion_after", "Confusion after fine-tuning", "accuracy", "verify.json",
            P.confusion_figure(after["confusion"], after["labels"],
                               f"after fine-tuning: acc {_fmt_pct(after.get('accuracy'))}"))
        goal = after.get("min_accuracy") or P.GOAL
        add("recall", "Per-class recall vs the goal", "accuracy", "verify.json",
            P.recall_compare_figure(after["per_class"], f"per-class recall (goal {goal:.2f})",
                                    before=(base or {}).get("per_class")))
    bench = found.get("bench.json")
    if bench:
        add("bench", "Latency and real-time factor vs budgets", "device", "bench.json",
            P.bench_figure(bench))
    stream = found.get("stream.json")
    if stream:
        dets, truth = _stream_parts(stream, Path(found["run"]))
        if dets is not None:
            add("stream_timeline", f"Streaming detections (first {stream_seconds:.0f} s)", "stream",
                "stream.json", P.timeline_figure(dets, truth, stream_seconds,
                                                 (stream.get("tolerance_ms") or 750.0) / 1000))
    return out


# ------------------------------------------------------------------ page

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;
background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:1.5em 2em 4em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em;background:#fff}
th,td{border:1px solid #ddd;padding:.3em .7em;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}
figure{margin:1em 0;background:#fff;border:1px solid #e3e3e3;padding:.6em;display:inline-block;
max-width:100%}
figure img{max-width:100%;height:auto;display:block}figcaption{font-size:.85em;color:#555}
.pass{color:#2e7d32;font-weight:600}.fail{color:#c62828;font-weight:600}
.missing{background:#fff8e1;border:1px solid #ffe0a3;padding:.6em 1em}
code{background:#f0f0f0;padding:0 .25em;border-radius:3px;font-size:.9em}
.muted{color:#777}
"""


def _fmt_pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _fmt_int(x) -> str:
    if x is None:
        return "n/a"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.2f}{unit}"
    return str(x)


def _fmt_kb(x) -> str:
    return "n/a" if x is None else f"{x / 1024:.1f} kB"


def _e(x) -> str:
    return html.escape(str(x))


def _table(head: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _img(fig: dict) -> str:
    data = base64.b64encode(fig["png"]).decode("ascii")
    return (f'<figure id="{_e(fig["name"])}"><img alt="{_e(fig["title"])}" '
            f'src="data:image/png;base64,{data}"><figcaption>{_e(fig["title"])} '
            f'<span class="muted">(from {_e(fig["source"])}; {_e(fig["file"])})</span>'
            "</figcaption></figure>")


def _verdict(ok) -> str:
    if ok is None:
        return ""
    return '<span class="pass">pass</span>' if ok else '<span class="fail">FAIL</span>'


def render_html(found: dict, figures: list[dict], missing: list[dict]) -> str:
    by_section: dict[str, list[dict]] = {}
    for f in figures:
        by_section.setdefault(f["section"], []).append(f)
    run = Path(found["run"])
    parts = [f"<h1>edgetune run report: {_e(run.resolve().name)}</h1>",
             (f'<p class="muted">{_e(run.resolve())} &middot; made '
              f'{_e(_dt.datetime.now().isoformat(timespec="seconds"))}</p>')]

    # summary: checkpoints
    cks = found.get("checkpoints") or []
    if cks:
        rows = []
        for c in cks:
            if "error" in c:
                rows.append([_e(c["file"]), f'<span class="fail">{_e(c["error"])}</span>', "", "",
                             "", "", ""])
                continue
            m = c.get("metrics") or {}
            rows.append([_e(c["file"]), _e(c.get("stage")), _e(c.get("arch")),
                         _fmt_int(c.get("params")), _fmt_int(c.get("macs")),
                         _fmt_pct(m.get("val_accuracy")), _fmt_pct(m.get("test_accuracy"))])
        parts.append("<h2>Checkpoints</h2>")
        parts.append(_table(["file", "stage", "arch", "params", "MACs", "val acc", "test acc"], rows))
        ft = next((c for c in cks if c.get("stage") == "finetuned"), None)
        if ft:
            m = ft.get("metrics") or {}
            bits = [f"{len(ft.get('labels') or [])} classes: {_e(', '.join(ft.get('labels') or []))}"]
            if ft.get("data"):
                bits.append(f"data: <code>{_e(ft['data'])}</code>")
            if m.get("base_test_accuracy") is not None:
                bits.append(f"base model test accuracy {_fmt_pct(m['base_test_accuracy'])} &rarr; "
                            f"fine-tuned {_fmt_pct(m.get('test_accuracy'))}")
            parts.append("<p>" + "<br>".join(bits) + "</p>")

    stages = found.get("stages")
    if stages:
        from edgetune.report.plots import stage_bytes

        parts.append("<h2>Stages</h2>")
        rows = [[_e(r.get("stage")), _fmt_int(r.get("params")), _fmt_int(r.get("macs")),
                 _fmt_kb(r.get("fp32_bytes")), _fmt_kb(r.get("int8_bytes")),
                 _fmt_kb(stage_bytes(r)), _fmt_pct(r.get("val_accuracy")),
                 _fmt_pct(r.get("test_accuracy"))] for r in stages]
        parts.append(_table(["stage", "params", "MACs", "fp32", "int8", "deployed", "val acc",
                             "test acc"], rows))
    parts += [_img(f) for f in by_section.get("stages", [])]

    if found.get("log"):
        log = found["log"]
        best = max((r.get("val_accuracy") or 0) for r in log)
        parts.append("<h2>Training</h2>")
        parts.append(f"<p>{len(log)} epochs; best val accuracy {_fmt_pct(best)}.</p>")
        parts += [_img(f) for f in by_section.get("training", [])]

    after = found.get("verify.json")
    if after or found.get("verify-base.json"):
        parts.append("<h2>Accuracy</h2>")
        if after:
            goal = after.get("min_accuracy")
            txt = f"verify: accuracy {_fmt_pct(after.get('accuracy'))} on {after.get('n', '?')} clips"
            if goal is not None:
                txt += f", goal {_fmt_pct(goal)} {_verdict(after.get('passed'))}"
            if after.get("precision"):
                txt += f" ({_e(after['precision'])} model)"
            low = [lab for lab, c in after["per_class"].items() if c.get("recall", 1) < 0.9]
            if low:
                txt += f"<br>classes with recall under 0.90: {_e(', '.join(low))}"
            parts.append(f"<p>{txt}</p>")
        parts += [_img(f) for f in by_section.get("accuracy", [])]

    bench = found.get("bench.json")
    if bench:
        dev = bench.get("device") or {}
        parts.append("<h2>Device budgets</h2>")
        txt = (f"model <code>{_e(bench.get('model', '?'))}</code> ({_e(bench.get('precision', '?'))}, "
               f"{_fmt_kb(bench.get('file_bytes'))})")
        if dev:
            txt += f" on profile <b>{_e(dev.get('name'))}</b>: {_verdict(bench.get('passed'))}"
        mach = bench.get("machine") or {}
        if mach:
            txt += (f"<br><span class=muted>measured on {_e(mach.get('processor'))}, "
                    f"{_e(mach.get('cpu_count'))} cores</span>")
        parts.append(f"<p>{txt}</p>")
        if bench.get("checks"):
            parts.append(_table(["budget", "value", "limit", "unit", ""],
                                [[_e(c["budget"]), f"{c['value']:g}", f"{c['limit']:g}",
                                  _e(c["unit"]), _verdict(c["passed"])] for c in bench["checks"]]))
        parts += [_img(f) for f in by_section.get("device", [])]

    stream = found.get("stream.json")
    if stream:
        s = stream["result"] if isinstance(stream.get("result"), dict) and "best" in stream else stream
        parts.append("<h2>Streaming</h2>")
        keys = [("words", "words", str), ("correct_pct", "correct", lambda v: f"{v:.1f}%"),
                ("false_reject_pct", "false rejects", lambda v: f"{v:.1f}%"),
                ("false_accepts_per_hour", "false accepts / hour", lambda v: f"{v:.2f}"),
                ("latency_ms_mean", "latency after word (ms)", lambda v: f"{v:.0f}"),
                ("real_time_factor", "real-time factor", lambda v: f"{v:.4f}")]
        rows = [[label, fmt(s[k])] for k, label, fmt in keys
                if isinstance(s.get(k), (int, float)) and not isinstance(s.get(k), bool)]
        if rows:
            parts.append(_table(["figure", "value"], rows))
        figs = by_section.get("stream", [])
        if not figs:
            parts.append('<p class="muted">stream.json has no detection list with truth words, '
                         "so no timeline is drawn.</p>")
        parts += [_img(f) for f in figs]

    if missing:
        parts.append("<h2>Missing</h2>")
        items = "".join(f"<li><code>{_e(m['file'])}</code>: {_e(m['gives'])}; make it with "
                        f"<code>{_e(m['make_with'])}</code></li>" for m in missing)
        parts.append(f'<div class="missing"><ul>{items}</ul></div>')

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>edgetune report: {_e(run.resolve().name)}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")


def _missing(run: Path) -> list[dict]:
    return [{"file": name, "gives": gives, "make_with": cmd.replace("RUN", str(run))}
            for name, (gives, cmd) in SOURCES.items() if not (run / name).is_file()]


# ------------------------------------------------------------------ writing


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_report(run: str | os.PathLike, out: str | os.PathLike | None = None,
                 stream_seconds: float = STREAM_SECONDS) -> dict:
    """Write OUT/report.html (self-contained), OUT/<plot>.png and OUT/report.json.

    out defaults to RUN/report. Returns the report.json dict: html path, plots
    drawn (name, file, title, source), files missing (and the command for each)."""
    run = Path(run)
    found = read_run(run)
    out = Path(out) if out is not None else run / "report"
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: exists and is not a folder; pass another --out")
    figures = _figures(found, stream_seconds)
    missing = _missing(run)
    page = render_html(found, figures, missing)
    summary = {
        "run": str(run),
        "out": str(out),
        "html": str(out / "report.html"),
        "plots": [{k: f[k] for k in ("name", "file", "title", "source")} for f in figures],
        "missing": missing,
        "checkpoints": [{k: v for k, v in c.items() if k != "labels"} for c in found["checkpoints"]],
    }
    if found.get("stages"):
        summary["stages"] = found["stages"]
    if found.get("verify.json"):
        v = found["verify.json"]
        summary["verify"] = {k: v.get(k) for k in ("accuracy", "n", "min_accuracy", "passed")}
    if found.get("bench.json"):
        b = found["bench.json"]
        summary["bench"] = {"passed": b.get("passed"),
                            "device": (b.get("device") or {}).get("name"),
                            "checks": b.get("checks", [])}
    out.mkdir(parents=True, exist_ok=True)
    for f in figures:
        _write_atomic(out / f["file"], f["png"])
    _write_atomic(out / "report.html", page.encode("utf-8"))
    _write_atomic(out / "report.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return summary


def format_summary(r: dict) -> str:
    lines = [f"report   {r['html']}",
             f"plots    {len(r['plots'])}: " + (", ".join(p["name"] for p in r["plots"]) or "none")]
    for m in r["missing"]:
        lines.append(f"missing  {m['file']:<17} {m['gives']}; make it with `{m['make_with']}`")
    return "\n".join(lines)
