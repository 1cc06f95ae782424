"""``MODEL_CARD.md``: what a run's model is, where its weights came from, how well it does, how it was built.

Written from the run's ``report.json`` (which holds the same facts) at the end of training
and again after each export, so that it always states the exports and their parity.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import RunError
from ...serialization import write_json, write_text
from ...tasks.scores import SCORES, score_name

__all__ = ["MODEL_CARD", "record_export", "write_model_card"]

MODEL_CARD = "MODEL_CARD.md"


def _md(value) -> str:
    """Text from a run folder (class names, file names) made inert in Markdown and in one table cell."""
    text = str(value).replace("\n", " ").replace("\r", " ")
    for char in "\\`*_[]<>|#":
        text = text.replace(char, "\\" + char)
    return text


def _code(value) -> str:
    """A code span: Markdown escapes do not apply inside one, so backticks and line ends are dropped."""
    text = str(value).replace("`", "'").replace("\n", " ").replace("\r", " ").replace("|", "/")
    return f"`{text}`"


def _numbers(values) -> str:
    """Numbers from a run folder, written short; anything else as a question mark."""
    if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values):
        return "?"
    return ", ".join(f"{v:.4g}" for v in values)


def _report(run: Path) -> dict:
    try:
        report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunError(f"'{run / 'report.json'}' cannot be read ({e}); the model card needs it.") from None
    if not isinstance(report, dict):
        raise RunError(f"'{run / 'report.json'}' is not a run report.")
    return report


def record_export(run: str | Path, kind: str, facts: dict) -> None:
    """Add an export's file and parity to ``report.json`` and write the model card again."""
    run = Path(run)
    if not (run / "report.json").is_file():
        return  # an unfinished run has no report to extend
    report = _report(run)
    exports = report.get("exports") if isinstance(report.get("exports"), dict) else {}
    exports[kind] = facts
    report["exports"] = exports
    write_json(run / "report.json", report)
    write_model_card(run)


def write_model_card(run: str | Path) -> Path:
    """Write ``MODEL_CARD.md`` from ``report.json``; returns its path."""
    run = Path(run)
    r = _report(run)
    lines = [f"# {_code(r.get('model'))}, fine-tuned ({_md(r.get('strategy'))})", ""]
    lines += _weights(r) + _training(r) + _data(r) + _results(r) + _calibration(r) + _exports(r) + _environment(r)
    return write_text(run / MODEL_CARD, "\n".join(lines).rstrip() + "\n")


def _weights(r: dict) -> list[str]:
    lines = ["## Source weights", ""]
    load = r.get("load_report")
    if not r.get("weights") or not isinstance(load, dict):
        return lines + ["None: trained from random initialisation.", ""]
    how = ", ".join(f"{n} by {k}" for k, n in (load.get("how") or {}).items())
    lines += [
        f"- weights: {_code(r['weights'])}",
        f"- loaded: {load.get('loaded_fraction', 0):.1%} of parameters ({how or 'none'}); "
        f"head {_code(load.get('head'))} new",
    ]
    verification = load.get("verification")
    if isinstance(verification, dict):
        findings = verification.get("findings") or []
        said = "; ".join(_md(f.get("message", "")) for f in findings if isinstance(f, dict))
        lines.append(f"- verification: {_md(verification.get('status'))}" + (f": {said}" if said else ""))
    return lines + [""]


def _training(r: dict) -> list[str]:
    params = r.get("parameters") or {}
    trained = params.get("trained") or {}
    frozen = params.get("frozen") or {}
    lines = [
        "## Training",
        "",
        f"- architecture: {_code(r.get('model'))}, strategy {_code(r.get('strategy'))}",
    ]
    advice = r.get("advice")
    if isinstance(advice, dict):
        lines.append(
            f"- strategy chosen by the probe (strategy auto): {_code(advice.get('command'))}, because "
            f"{_md(advice.get('reason'))}"
        )
    lines += [
        f"- parameters: {r.get('trainable_params', 0):,} trained, {r.get('frozen_params', 0):,} frozen "
        "(in the last phase)",
    ]
    pre = r.get("preprocessing")
    if isinstance(pre, dict) and isinstance(pre.get("input_size"), list) and len(pre["input_size"]) == 3:
        channels, height, width = pre["input_size"]
        order = ", channels BGR" if pre.get("channel_order") == "BGR" else ""
        lines.append(
            f"- preprocessing: {_numbers([height])}x{_numbers([width])} px, {_md(pre.get('crop_mode'))} crop "
            f"{_numbers([pre.get('crop_pct')])}, {_md(pre.get('interpolation'))}, mean ({_numbers(pre.get('mean'))}), "
            f"std ({_numbers(pre.get('std'))}){order}"
        )
    if trained:
        lines.append("- trained: " + ", ".join(f"{_code(k)} ({v:,})" for k, v in trained.items()))
    if frozen:
        lines.append("- frozen: " + ", ".join(f"{_code(k)} ({v:,})" for k, v in frozen.items()))
    best = r.get("best") or {}
    epochs = r.get("epochs") or []
    lines.append(
        f"- {len(epochs)} epochs in {r.get('seconds', 0):.0f} s; best checkpoint: epoch {best.get('epoch')} "
        f"by {_md(best.get('monitor'))}"
    )
    return lines + [""]


def _data(r: dict) -> list[str]:
    counts = r.get("class_counts") or {}
    splits = [s for s in ("train", "val", "test") if isinstance(counts.get(s), dict)]
    classes = list(counts.get(splits[0], {})) if splits else []
    if r.get("task") == "regression":
        stats = (r.get("target_stats") or {}).get("train") or {}
        described = ", ".join(f"{k} {v:.4g}" for k, v in stats.items() if isinstance(v, (int, float)))
        lines = ["## Data", "", f"A number per image; {_md(r.get('splits'))}.", ""]
        return lines + ([f"Training targets: {described}.", ""] if described else [])
    kind = "labels (images with each)" if r.get("task") == "multi-label" else "classes"
    lines = ["## Data", "", f"{len(classes)} {kind}; {_md(r.get('splits'))}.", ""]
    if classes:
        column = "label" if r.get("task") == "multi-label" else "class"
        lines += [f"| {column} | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
        lines += [f"| {_md(c)} | " + " | ".join(str(counts[s].get(c, 0)) for s in splits) + " |" for c in classes]
        lines.append("")
    skipped = r.get("skipped_images") or []
    if skipped:
        shown = ", ".join(f"{_md(s.get('name'))} ({_md(s.get('reason'))})" for s in skipped[:5] if isinstance(s, dict))
        lines += [f"{len(skipped)} images skipped: {shown}{' ...' if len(skipped) > 5 else ''}", ""]
    return lines


def _results(r: dict) -> list[str]:
    best = r.get("best") or {}
    lines = ["## Results on the held-out images", ""]
    scores = [f"{score_name(key)} {best[key]:.4f}" for key in SCORES if isinstance(best.get(key), (int, float))]
    lines += [", ".join(scores) + ".", ""] if scores else []
    interval = r.get("interval")
    if isinstance(interval, dict) and isinstance(interval.get("half_width"), (int, float)):
        lines += [
            f"Prediction interval: value ± {interval['half_width']:.4g}, {interval.get('level', 0):.0%} "
            f"split-conformal from {interval.get('images')} validation residuals.",
            "",
        ]
    per_label = ((r.get("best_metrics") or {}).get("per_label")) or {}
    if per_label:
        lines += ["| label | AP | precision | recall | F1 | threshold |", "|---|---:|---:|---:|---:|---:|"]
        for name, m in per_label.items():
            cells = [m.get(k) for k in ("ap", "precision", "recall", "f1", "threshold")]
            lines.append(f"| {_md(name)} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in cells) + " |")
        lines.append("")
    per_class = ((r.get("best_metrics") or {}).get("per_class")) or {}
    if per_class:
        lines += ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
        for name, m in per_class.items():
            cells = [m.get(k) for k in ("precision", "recall", "f1")]
            text = ["-" if v is None else f"{v:.3f}" for v in cells]
            lines.append(f"| {_md(name)} | {' | '.join(text)} | {m.get('support')} |")
        lines.append("")
    return lines


def _calibration(r: dict) -> list[str]:
    c = r.get("calibration")
    if not isinstance(c, dict):
        return []
    lines = ["## Calibration", ""]
    if c.get("task") == "multi-label":
        return lines + _label_calibration(c)
    if c.get("temperature") is None:
        return lines + [f"No temperature: {_md(c.get('reason'))}.", ""]
    return lines + [
        f"Temperature {c['temperature']:.3f}, fitted on {c.get('images')} held-out images: expected calibration "
        f"error (15 bins) {c.get('ece_before', 0):.4f} before, {c.get('ece_after', 0):.4f} after; negative "
        f"log-likelihood {c.get('nll_before', 0):.4f} before, {c.get('nll_after', 0):.4f} after.",
        "",
    ]


def _label_calibration(c: dict) -> list[str]:
    temperatures, labels = c.get("temperatures"), c.get("labels") or []
    if not isinstance(temperatures, list):
        reasons = sorted(set((c.get("unfitted") or {}).values()))
        return [f"No temperature: {_md('; '.join(map(str, reasons)) or 'none fitted')}.", ""]
    unfitted = c.get("unfitted") or {}
    fitted = [
        f"{_md(name)} {t:.3f}" for name, t in zip(labels, temperatures) if name not in unfitted and isinstance(t, float)
    ]
    return [
        f"One temperature per label, fitted on {c.get('images')} held-out images: {', '.join(fitted)}. Labels with "
        f"too few held-out images on either side keep 1. Expected calibration error of every (image, label) "
        f"probability (15 bins) {c.get('ece_before', 0):.4f} before, {c.get('ece_after', 0):.4f} after; binary "
        f"cross-entropy {c.get('nll_before', 0):.4f} before, {c.get('nll_after', 0):.4f} after. The thresholds "
        "move with the temperatures: every decision stays the same.",
        "",
    ]


def _exports(r: dict) -> list[str]:
    exports = r.get("exports")
    if not isinstance(exports, dict) or not exports:
        return []
    lines = [
        "## Exports",
        "",
        "| file | precision | images | largest logit difference | agreement (top-1 or named) | accuracy (PyTorch) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for facts in exports.values():
        p = facts.get("parity") or {}
        if "top1_agreement" in p:
            agreement = f"{p.get('top1_agreement', 0):.2%}"
            accuracy = f"{p.get('accuracy', 0):.4f} ({p.get('reference_accuracy', 0):.4f})"
        elif "decision_agreement" in p:
            agreement, accuracy = f"label decisions {p.get('decision_agreement', 0):.2%}", "-"
        else:
            agreement, accuracy = f"values within {p.get('value_max_abs_diff', 0):.3g}", "-"
        lines.append(
            f"| {_md(facts.get('file'))} | {_md(p.get('precision'))} | {p.get('images')} | "
            f"{p.get('max_abs_diff', 0):.3g} | {agreement} | {accuracy} |"
        )
    return lines + [""]


def _environment(r: dict) -> list[str]:
    env = r.get("environment")
    if not isinstance(env, dict):
        return []
    versions = ", ".join(f"{k} {_md(env.get(k))}" for k in ("python", "torch", "torchvision", "timm", "transferkit"))
    lines = ["## Environment", "", f"- {versions}"]
    for role, fast in (env.get("kernels") or {}).items():
        if isinstance(fast, dict):
            layout = "channels-last" if fast.get("channels_last") else "NCHW"
            lines.append(f"- {role} kernels: {layout} {_md(fast.get('precision'))} ({_md(fast.get('reason'))})")
    return lines + [""]
