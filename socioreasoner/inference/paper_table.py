"""The paper's results table: rows are runs, columns are the task levels (Socio-name, Socio-class, Socio-function)
and All, each as cIoU / gIoU / F1 in percent (the paper's Table 1 layout), and the paper's published rows to put
a run beside (SocioSeg test, Qwen2.5-VL-3B base; numbers as the paper prints them, SPEC *Published numbers*).

A two-stage run gives two rows: its final masks, and its stage-1 (box-only) masks, which is the paper's "w/o
refinement" ablation measured on the same completions. A single-stage run (the "w/o reflection" ablation, the SFT
baseline) gives one."""

from __future__ import annotations

LEVEL_COLUMNS = (("name", "Socio-name"), ("class", "Socio-class"), ("function", "Socio-function"), ("overall", "All"))
METRIC_ORDER = ("ciou", "giou", "f1")

# (cIoU, gIoU, F1) per level; the paper gives per-level numbers for its own method only
PAPER_ROWS = {
    "SocioReasoner (paper, Table 1)": {"name": (52.6, 55.7, 64.6), "class": (47.6, 52.8, 60.1),
                                       "function": (40.6, 46.9, 50.3), "overall": (47.9, 52.8, 59.7)},
    "VisionReasoner (paper, Table 1)": {"overall": (44.0, 48.5, 54.3)},
    "RemoteReasoner (paper, Table 1)": {"overall": (43.2, 47.7, 53.3)},
    "Seg-R1 (paper, Table 1)": {"overall": (41.0, 45.0, 45.2)},
    "SegEarth-R1 (paper, Table 1)": {"overall": (38.3, 44.1, 48.4)},
    "w/o reflection: single stage (paper, ablation)": {"overall": (44.0, 48.5, 54.3)},
    "w/o refinement: stage 1 only (paper, ablation)": {"overall": (46.4, 50.8, 57.5)},
}


def run_rows(name: str, metrics: dict, single_stage: bool = False) -> dict[str, dict]:
    """The table rows of one evaluation's metrics: `name` (final masks) and, for a two-stage run, `name` + stage 1
    only."""
    rows = {}
    stages = [(f"{name} (single stage)", "final")] if single_stage else [
        (name, "final"), (f"{name}, stage 1 only (w/o refinement)", "stage1")]
    for label, stage in stages:
        groups = metrics.get(stage, {})
        rows[label] = {level: tuple(None if groups[level].get(m) is None else round(100 * groups[level][m], 1)
                                    for m in METRIC_ORDER)
                       for level, _ in LEVEL_COLUMNS if level in groups}
    return rows


def table_markdown(rows: dict[str, dict], note: str = "") -> str:
    """Markdown table in the paper's layout; a missing number is a dash."""
    header = "| run | " + " | ".join(f"{title} cIoU | {title} gIoU | {title} F1" for _, title in LEVEL_COLUMNS) + " |"
    lines = [header, "|---" * (1 + 3 * len(LEVEL_COLUMNS)) + "|"]
    for label, levels in rows.items():
        cells = []
        for level, _ in LEVEL_COLUMNS:
            values = levels.get(level, (None, None, None))
            cells += ["–" if v is None else f"{v:.1f}" for v in values]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" + (f"\n{note}\n" if note else "")


def rows_of_evaluations(eval_dirs) -> dict[str, dict]:
    """The paper-layout rows that evaluations wrote (`metrics.json`'s `table`), in the order given; a one-line
    ValueError for a folder without them."""
    import json
    from pathlib import Path

    rows = {}
    for directory in map(Path, eval_dirs):
        path = directory / "metrics.json"
        try:
            table = json.loads(path.read_text()).get("table")
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read an evaluation's metrics ({type(err).__name__})") from None
        if not isinstance(table, dict):
            raise ValueError(f"{path}: no 'table' rows (written by socioreasoner.evaluate since F1 was added)")
        rows.update({label: {level: tuple(v) for level, v in levels.items()} for label, levels in table.items()})
    return rows


def main(argv=None) -> int:
    """`python -m socioreasoner.inference.paper_table EVAL_DIR... [--compare-paper] [--out table.md]`: one table of
    several evaluations' rows (e.g. the paper's ablations, each evaluated on its own)."""
    import argparse
    import sys
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m socioreasoner.inference.paper_table", description=main.__doc__)
    parser.add_argument("evaluations", nargs="+", help="output folders of socioreasoner.evaluate")
    parser.add_argument("--compare-paper", action="store_true", help="add the paper's published rows")
    parser.add_argument("--out", help="write the table here (default: print it)")
    args = parser.parse_args(argv)
    try:
        rows = rows_of_evaluations(args.evaluations)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.compare_paper:
        rows.update(PAPER_ROWS)
    text = table_markdown(rows, "Rows from " + ", ".join(args.evaluations) + ".")
    if args.out:
        from socioreasoner.io import atomic_write_text

        atomic_write_text(Path(args.out), text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
