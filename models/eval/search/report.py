"""The Markdown report of the mixed-kind search evaluation (``SEARCH-EVAL.md``)."""

from __future__ import annotations

from typing import Any

from models.eval.search.runner import MODES, RECALL_AT, targets
from models.eval.search.testset import ITEM_KINDS

KIND_NAMES = {
    "photo": "image-only photos",
    "captioned": "captioned images",
    "document": "text-only documents",
    "video": "video segments",
}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render(result: dict[str, Any], bundle: str, command: str) -> str:
    test = result["summary"]["test"]
    sizes = result["collection"]
    lines = [
        "# Mixed-kind search evaluation",
        "",
        f"Bundle `{bundle}` ({result.get('model') or '?'}), measured with `{command}` through the "
        "public HTTP API of a real gateway (embedded store, default settings but for the folder "
        "the videos are read from).",
        "",
        "One collection: "
        + ", ".join(f"{sizes[k]} {KIND_NAMES[k]}" for k in ITEM_KINDS)
        + " (`models/eval/search/testset.py` says where each comes from). Each query's right "
        "answers are of one kind; R@k: the share of queries with a right answer in the top k "
        f"(page of {result['limit']}). The table is the **test split** "
        f"({test['auto']['all']['n']} of {len(result['queries'])} queries, by a hash of their "
        "text); the dev split (a third by hash, and the texts the photo bundle was tuned on) is "
        "kept apart for tuning fusion and is not reported. **overall**: the mean over the four "
        "kinds (each kind weighs the same); "
        "**pooled**: over all test queries. Fused modes use the gateway's fusion as it ships "
        "(`service/search/fusion.py`: over the channels an item has, each cosine standardised "
        "against the bundle's null for that channel, measured on a fixed probe set, then turned "
        "into a probability of relevance by a logistic curve per kind of evidence, fitted on "
        "held-out data that is not this evaluation's (`models/eval/search/relevance.py`); the "
        "item's score is the weighted mean of those probabilities, a generated description "
        "weighing half); "
        "fusion was chosen on the dev split (`models/eval/search/FUSION-DEV.md`), nothing here "
        "was tuned on these queries.",
        "",
    ]
    head = "| mode | channels | " + " | ".join(
        f"{KIND_NAMES[k]} (n={test['auto'][k]['n']}) R@1 / R@10" for k in ITEM_KINDS
    )
    head += f" | overall R@1 / R@10 | pooled (n={test['auto']['all']['n']}) R@1 / R@10 |"
    lines += [head, "|" + " --- |" * (len(ITEM_KINDS) + 4)]
    for mode in MODES:
        row = test[mode]
        cells = [
            " / ".join(_fmt(row[k][f"r{r}"]) for r in RECALL_AT)
            for k in (*ITEM_KINDS, "overall", "all")
        ]
        channels = ", ".join(result["channels"].get(mode, []))
        name = f"**{mode}**" if mode == "auto" else mode
        lines.append(f"| {name} | {channels} | " + " | ".join(cells) + " |")
    check = targets(test)
    lines += [
        "",
        "Targets (issue 15): `auto` within 0.05 of the best single mode for every kind, "
        "and above each single mode overall.",
        "",
    ]
    for name, c in check["per_kind"].items():
        mark = "met" if c["met"] else "**not met**"
        lines.append(
            f"- {name}: auto {_fmt(c['auto'])}, best single {_fmt(c['best_single'])} "
            f"({c['best_mode']}): {mark}"
        )
    for name, c in check["overall"].items():
        mark = "met" if c["met"] else "**not met**"
        singles = ", ".join(f"{m} {_fmt(v)}" for m, v in c["singles"].items())
        lines.append(f"- overall {name}: auto {_fmt(c['auto'])} vs {singles}: {mark}")
    misses = [q for q in result["queries"] if q["split"] == "test" and q["ranks"]["auto"] is None]
    if misses:
        lines += ["", f"Test queries with no right answer in auto's top {result['limit']}:", ""]
        for q in misses:
            top = ", ".join(f"{t['key']} ({t['kind']})" for t in q["auto_top3"])
            lines.append(f'- "{q["text"]}" ({q["kind"]}; wanted {", ".join(q["relevant"])}): {top}')
    lines += ["", f"Run time {result['seconds']} s.", ""]
    return "\n".join(lines)
