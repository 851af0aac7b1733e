"""``gspo report RUN_DIR``: plot a run's ``metrics.jsonl`` into ``report.png`` and summarise it in ``report.md``.

Reads the per-step JSON objects the trainer writes (``step`` plus metric names, see docs/algorithm.md "Metrics";
step 0 is the validation before training). A metric a run did not log is skipped, and a panel with no metric at all
is left out, so reports of old runs, vanilla-PPO runs (no ``actor/seq_importance_ratio``) or runs without validation
still work.
matplotlib is an optional dependency (``pip install 'gspo[report]'``) imported only here, with the Agg backend.
"""

from __future__ import annotations

import math
from pathlib import Path

from gspo.data.loading import iter_jsonl
from gspo.errors import InputError

INSTALL_HINT = "gspo report needs matplotlib: pip install 'gspo[report]' (or pip install matplotlib)"

# (title, y label, [(metric, legend label)], kind): "line", "twin" (second metric on a right axis), "band"
# (mean with a min/max band), "stack" (stacked areas with the total step time as a line).
PANELS = [
    ("Reward and accuracy", "mean", [("reward/all/acc_mean", "train acc (all generated)"),
                                     ("reward/kept/acc_mean", "train acc (kept groups)"),
                                     ("val/acc_mean", "val acc"), ("val/score_mean", "val score")], "line"),
    ("Dynamic sampling", "filtered ratio", [("train/filtered_prompts_ratio", "filtered prompts ratio"),
                                            ("train/num_gen_batches", "generation batches")], "twin"),
    ("GSPO clip fractions", "fraction", [("actor/pg_clipfrac_lower", "clipped low (ratio < 1)"),
                                         ("actor/pg_clipfrac_upper", "clipped high (ratio > 1)")], "line"),
    ("Sequence importance ratio", "s_i", [("actor/seq_importance_ratio", "mean"),
                                          ("actor/seq_importance_ratio_min", "min"),
                                          ("actor/seq_importance_ratio_max", "max")], "band"),
    ("Entropy", "nats / token", [("actor/entropy", "entropy")], "line"),
    ("Response length", "tokens", [("response_length/mean", "mean")], "line"),
    ("Step time by phase", "seconds", [("timing/gen", "generate"), ("timing/reward", "reward"),
                                       ("timing/old_log_prob", "old log-prob"), ("timing/update", "update")], "stack"),
]


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a ``metrics.jsonl`` in file order; ``InputError`` with ``file:line`` for a malformed line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no metrics file (written by gspo train into trainer.default_local_dir)")
    rows = []
    for lineno, row in iter_jsonl(path):  # DataError (a ValueError) names file:line for a malformed line
        if not isinstance(row, dict) or not isinstance(row.get("step"), (int, float)):
            raise InputError(f"{path}:{lineno}: expected a JSON object with a numeric 'step'")
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no metrics logged yet")
    return rows


def series(rows: list[dict], name: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows that logged ``name`` with a finite number; a resumed run's repeats: last wins."""
    points = {}
    for row in rows:
        value = row.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            points[row["step"]] = float(value)
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def import_pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise InputError(INSTALL_HINT) from exc
    matplotlib.use("Agg")  # files only: no display, works on headless machines
    import matplotlib.pyplot as plt

    return plt


def plot_report(rows: list[dict], out: Path, title: str) -> int:
    """Draw the panels that have data into ``out`` (PNG); returns how many were drawn (0: no file written)."""
    plt = import_pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = [p for p in PANELS if any(series(rows, name)[0] for name, _ in p[2])]
    if not panels:
        return 0
    cols = 2 if len(panels) > 1 else 1
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(7 * cols, 3.4 * nrows), squeeze=False)
    for ax, (panel_title, ylabel, metrics, kind) in zip(axes.flat, panels):
        _draw(ax, rows, metrics, kind)
        ax.set_title(panel_title)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)  # an offset label ("+6.917") hides small drifts' scale
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return len(panels)


def _draw(ax, rows: list[dict], metrics: list[tuple[str, str]], kind: str) -> None:
    present = [(name, label, *series(rows, name)) for name, label in metrics if series(rows, name)[0]]
    if kind == "stack":
        steps = sorted(set().union(*(s for _, _, s, _ in present)))
        layers = [[dict(zip(s, v)).get(step, 0.0) for step in steps] for _, _, s, v in present]
        ax.stackplot(steps, layers, labels=[label for _, label, _, _ in present], alpha=0.8)
        total_steps, total = series(rows, "timing/step")
        if total_steps:  # the total also holds phases not stacked (advantages, reference log-probs)
            ax.plot(total_steps, total, color="black", lw=1, label="step total")
    elif kind == "band":
        _draw_band(ax, rows, metrics)
    elif kind == "twin" and len(present) == 2:
        (_, label, steps, values), (_, right_label, right_steps, right_values) = present
        ax.plot(steps, values, marker=".", color="tab:blue", label=label)
        right = ax.twinx()
        right.plot(right_steps, right_values, marker=".", color="tab:orange", label=right_label)
        right.set_ylabel(right_label)
        # One legend on the twin axis, which is drawn last: the right-axis line cannot cross it.
        right.legend(ax.get_lines() + right.get_lines(), [label, right_label], loc="upper left", fontsize=8)
        return
    else:
        for name, label, steps, values in _merge_identical(present):
            is_val = name.startswith("val/")  # logged every test_freq steps: markers keep sparse points visible
            style = LINE_STYLES.get(name, {})
            ax.plot(steps, values, marker=style.get("marker", "o" if is_val else "."), ms=4 if is_val else 2,
                    ls=style.get("ls", "-"), label=label)
    ax.legend(loc="upper left", fontsize=8)


# Lines that often run close (score vs acc of a rule reward) get their own dash and marker.
LINE_STYLES = {"val/score_mean": {"ls": "--", "marker": "x"}, "reward/kept/acc_mean": {"ls": ":"}}


def _merge_identical(present: list[tuple]) -> list[tuple]:
    """One line for metrics with the same points (a 0/1 reward's val score is its val acc), labelled with both:
    otherwise the second hides the first exactly."""
    merged: list[tuple] = []
    for name, label, steps, values in present:
        twin = next((i for i, (_, _, s, v) in enumerate(merged) if s == steps and v == values), None)
        if twin is None:
            merged.append((name, label, steps, values))
        else:
            first = merged[twin]
            merged[twin] = (first[0], f"{first[1]} = {label}", first[2], first[3])
    return merged


def _draw_band(ax, rows: list[dict], metrics: list[tuple[str, str]]) -> None:
    """The mean as a line, the min/max as a shaded band where both were logged at the same steps."""
    (mean_name, mean_label), (low_name, _), (high_name, _) = metrics
    steps, values = series(rows, mean_name)
    if steps:
        ax.plot(steps, values, marker=".", label=mean_label)
    (low_steps, low), (high_steps, high) = series(rows, low_name), series(rows, high_name)
    if low_steps and low_steps == high_steps:
        ax.fill_between(low_steps, low, high, alpha=0.25, label="min .. max")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")


# ------------------------------------------------------------------------------------------------------ summary
def summarize(rows: list[dict]) -> dict[str, float | int | None]:
    """The numbers of ``report.md``; None where the run did not log the metric."""
    train = [r for r in rows if r["step"] > 0 and any(k.startswith(("actor/", "train/")) for k in r)]
    val_steps, val_acc = series(rows, "val/acc_mean")
    best = max(range(len(val_acc)), key=val_acc.__getitem__) if val_acc else None  # first of ties

    def mean(name: str) -> float | None:
        values = series(train, name)[1]
        return sum(values) / len(values) if values else None

    def last(name: str) -> float | None:
        values = series(rows, name)[1]
        return values[-1] if values else None

    picks = {"start": 0, "end": -1, "best": best}
    val = {f"val_acc_{key}{suffix}": (seq[i] if seq and i is not None else None)
           for key, i in picks.items() for suffix, seq in (("", val_acc), ("_step", val_steps))}
    return {"steps": int(max((r["step"] for r in train), default=0)), "logged_steps": len(train), **val,
            "step_time_mean_s": mean("timing/step"), "filtered_ratio_mean": mean("train/filtered_prompts_ratio"),
            "gen_batches_mean": mean("train/num_gen_batches"), "train_acc_end": last("reward/all/acc_mean"),
            "clipfrac_lower_end": last("actor/pg_clipfrac_lower"),
            "clipfrac_upper_end": last("actor/pg_clipfrac_upper")}


def run_name(run_dir: Path) -> str:
    """``trainer.experiment_name`` from the run's ``config.yaml``; else the folder's name, with its parent's when
    the folder has a generic name such as ``run``."""
    import yaml

    config = run_dir / "config.yaml"
    try:
        name = (yaml.safe_load(config.read_text()) or {}).get("trainer", {}).get("experiment_name")
    except (OSError, yaml.YAMLError, AttributeError):
        name = None
    if name:
        return str(name)
    folder = run_dir.resolve()
    return f"{folder.parent.name}/{folder.name}" if folder.name in GENERIC_RUN_NAMES else folder.name


GENERIC_RUN_NAMES = ("run", "runs", "output", "outputs", "default")


def render_markdown(name: str, summary: dict, has_plot: bool) -> str:
    def fmt(value, spec=".4f") -> str:
        return "n/a" if value is None else format(value, spec)

    def at(key: str) -> str:
        step = summary[f"{key}_step"]
        return fmt(summary[key]) + ("" if step is None else f" (step {step:g})")

    lines = [f"# Run report: {name}", "", "| | |", "|---|---|",
             f"| training steps | {summary['steps']} ({summary['logged_steps']} logged) |",
             f"| val acc: start / end / best | {at('val_acc_start')} / {at('val_acc_end')} / {at('val_acc_best')} |",
             f"| final train acc (all generated) | {fmt(summary['train_acc_end'])} |",
             f"| mean step time | {fmt(summary['step_time_mean_s'], '.2f')} s |",
             f"| mean filtered prompts ratio | {fmt(summary['filtered_ratio_mean'], '.3f')} |",
             f"| mean generation batches per step | {fmt(summary['gen_batches_mean'], '.2f')} |",
             f"| final clip fraction low / high | {fmt(summary['clipfrac_lower_end'])} / "
             f"{fmt(summary['clipfrac_upper_end'])} |", ""]
    if has_plot:
        lines += ["![training curves](report.png)", ""]
    return "\n".join(lines)


def write_report(run_dir: str | Path) -> tuple[Path | None, Path, dict]:
    """Write ``RUN_DIR/report.png`` (None when no known metric was logged) and ``RUN_DIR/report.md``."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise InputError(f"RUN_DIR: {run_dir} is not a folder (expected trainer.default_local_dir of a run)")
    rows = read_metrics(run_dir / "metrics.jsonl")
    png = run_dir / "report.png"
    name = run_name(run_dir)
    drawn = plot_report(rows, png, title=f"gspo run: {name}")
    summary = summarize(rows)
    md = run_dir / "report.md"
    md.write_text(render_markdown(name, summary, has_plot=drawn > 0), encoding="utf-8")
    return (png if drawn else None), md, summary


# ------------------------------------------------------------------------------------------------- end of a run
def format_run_summary(run_dir: str | Path, wall_s: float, eval_data: str | None = None) -> str:
    """What ``gspo train`` prints when it finishes: validation accuracy start -> end (best), steps, wall time,
    where the model and metrics are, and the commands that evaluate and plot them."""
    run_dir = Path(run_dir)
    final, metrics = run_dir / "final_model", run_dir / "metrics.jsonl"
    try:
        summary = summarize(read_metrics(metrics))
    except (FileNotFoundError, ValueError):
        summary = {"steps": 0, "val_acc_start": None}
    lines = [f"done: {summary['steps']} steps in {wall_s:.1f} s"]
    if summary.get("val_acc_start") is not None:
        gain = summary["val_acc_end"] - summary["val_acc_start"]
        lines.append(f"  val acc      {summary['val_acc_start']:.4f} (step {summary['val_acc_start_step']:g}) -> "
                     f"{summary['val_acc_end']:.4f} (step {summary['val_acc_end_step']:g}), {gain:+.4f}; best "
                     f"{summary['val_acc_best']:.4f} (step {summary['val_acc_best_step']:g})")
    lines += [f"  final model  {final}", f"  metrics      {metrics}"]
    if eval_data:
        lines.append(f"  evaluate     gspo eval --model {final} --data {eval_data}")
    lines.append(f"  plot         gspo report {run_dir}")
    return "\n".join(lines)
