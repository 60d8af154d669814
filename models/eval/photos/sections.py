"""Sections of the real-photo report below the main tables: near-duplicates, the mixed
collection, the queries the bundle misses, examples with the hits' descriptions, and the
queries shared with the photo bundle's dev set. Markdown table helpers live here too."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from models.eval.photos.metrics import summarise
from models.eval.photos.transforms import LABELS

# Queries whose hits the report shows, when the run has them: common asks of each kind.
EXAMPLE_QUERIES: tuple[str, ...] = (
    "a cat",
    "a cup of coffee",
    "a motorcycle",
    "an animal",
    "a city street",
    "a red fruit",
    "an astronaut posing in front of a flag",
)
EXAMPLE_HITS = 3


def num(value: float | int | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [row(header), row(["---"] * len(header)), *(row(r) for r in rows)]


def near_dup_section(results: dict[str, dict[str, Any]], names: list[str]) -> list[str]:
    lines = ["", "## Image → image near-duplicates (R@1: the original photo first)", ""]
    rows = []
    for name, label in LABELS.items():
        cells = [label]
        for n in names:
            per = results[n]["near_duplicates"]["per_transform"][name]
            cells.append(f"{num(per['r1'])} ({num(per['r1_or_twin'])} with twins)")
        rows.append(cells)
    rows.append(["all", *(num(results[n]["near_duplicates"]["r1"]) for n in names)])
    lines += table(["transform", *names], rows)
    misses = [
        f"{m['id']} ({t}: first {m['first']})"
        for t, per in results[names[0]]["near_duplicates"]["per_transform"].items()
        for m in per["misses"]
    ]
    lines += ["", f"Misses ({names[0]}): " + ("; ".join(misses) if misses else "none") + "."]
    lines.append(
        "A twin is a second photo of the same scene in the corpus (stereo pair, nearby "
        "viewpoint); finding it first still counts as a miss in R@1."
    )
    return lines


def mixed_section(results: dict[str, dict[str, Any]], names: list[str]) -> list[str]:
    main = results[names[0]].get("mixed")
    if not main:
        return []
    lines = [
        "",
        "## Mixed collection (default mode)",
        "",
        f"{main['added_captioned']} captioned scenes and {main['added_text_only']} text-only "
        "documents (half sent as `description`, half as `caption`; some mention cats, coffee, "
        "dogs, motorcycles) were added through the same API, then the object queries ran again "
        f"(collection of {main['collection_size']}).",
        "",
    ]
    rows = []
    for n in names:
        m = results[n].get("mixed")
        if not m:
            continue
        b, a = m["before"], m["after"]
        rows.append(
            [
                n,
                f"{m['pairs_kept']} of {m['pairs_in_top5_before']}",
                f"{num(b['r1'])} → {num(a['r1'])}",
                f"{num(b['r5'])} → {num(a['r5'])}",
                str(m["added_items_in_top5"]),
            ]
        )
    header = ["bundle", "photos kept in top 5", "object R@1", "object R@5", "added items in top 5"]
    lines += table(header, rows)
    fell = [
        f'"{f["query"]}": {f["photo"]} → rank {f["rank_after"] or "> 100"}'
        for f in main["fell_out"]
    ]
    lines += ["", f"Fell out ({names[0]}): " + ("; ".join(fell) if fell else "none") + "."]
    lines += _ablation_lines(results, names, None)
    if main.get("described"):
        d = main["described"]
        lines += [
            "",
            "The same check with the scenes as `make run` serves them, caption and description "
            "(a third vector each), matching photos kept in the top 5: "
            + "; ".join(
                f"{n} {m['pairs_kept']} of {m['pairs_in_top5_before']}"
                for n in names
                if (m := (results[n].get("mixed") or {}).get("described"))
            )
            + f" (added items in the top 5 for {names[0]}: {d['added_items_in_top5']}).",
        ]
        lines += _ablation_lines(results, names, "described")
    return lines


def misses_section(main: dict[str, Any], primary: str) -> list[str]:
    missed = [q for q in main["default_mode"]["queries"] if q["rank"] is None or q["rank"] > 5]
    lines = ["", f"## Queries {primary} misses (best relevant photo below rank 5)", ""]
    if not missed:
        return [*lines, "None."]
    rows = []
    for q in missed:
        top = q["top"][0] if q["top"] else {}
        rows.append(
            [
                q["kind"],
                q["text"],
                ", ".join(q["relevant"]),
                str(q["rank"] or "-"),
                hit_text(top),
            ]
        )
    lines += table(["kind", "query", "relevant", "rank", "first hit (its description)"], rows)
    return lines


def hit_text(hit: dict[str, Any]) -> str:
    if not hit:
        return "-"
    described = hit.get("description")
    return f"{hit['id']}: {described}" if described else str(hit["id"])


def examples_section(main: dict[str, Any], primary: str) -> list[str]:
    by_text = {q["text"]: q for q in main["default_mode"]["queries"]}
    shown = [by_text[t] for t in EXAMPLE_QUERIES if t in by_text]
    if not shown:
        return []
    lines = ["", f"## Examples ({primary}, default mode: the first {EXAMPLE_HITS} hits)", ""]
    rows = []
    for q in shown:
        hits = "<br>".join(
            f"{'**' if h['id'] in q['relevant'] else ''}{hit_text(h)}"
            f"{'**' if h['id'] in q['relevant'] else ''}"
            for h in q["top"][:EXAMPLE_HITS]
        )
        rows.append([q["text"], ", ".join(q["relevant"]), hits or "-"])
    lines += table(["query", "relevant", "hits (relevant in bold; description if any)"], rows)
    return lines


def dev_overlap_section(
    results: dict[str, dict[str, Any]], names: list[str], dev_texts: Collection[str]
) -> list[str]:
    """The figures again without the query texts the bundle's dev set also has: those were
    tuned on (with other photos), so they may flatter the bundle."""
    dev = {t.lower() for t in dev_texts}
    queries = results[names[0]]["default_mode"]["queries"]
    shared = [q["text"] for q in queries if q["text"].lower() in dev]
    if not shared:
        return []
    lines = [
        "",
        "## Without the query texts the dev set shares",
        "",
        f"{len(shared)} of {len(queries)} query texts also appear among the photo bundle's "
        "dev queries (`models/photo/dev/queries.tsv`, asked of other photos): "
        + ", ".join(f'"{t}"' for t in shared)
        + ". On the other queries, default mode:",
        "",
    ]
    rows = []
    for n in names:
        result = results[n]
        size = result["collection_size"]
        rest = [q for q in result["default_mode"]["queries"] if q["text"].lower() not in dev]
        every = summarise([q["rank"] for q in rest], size)
        objects = summarise([q["rank"] for q in rest if q["kind"] == "object"], size)
        rows.append(
            [
                n,
                str(every["n"]),
                num(every["r1"]),
                num(every["r5"]),
                str(objects["n"]),
                num(objects["r1"]),
            ]
        )
    lines += table(["bundle", "queries", "R@1", "R@5", "object queries", "object R@1"], rows)
    return lines


def _ablation_lines(
    results: dict[str, dict[str, Any]], names: list[str], variant: str | None
) -> list[str]:
    """The reciprocal-rank-fusion ablation of one variant of the mixed check, if it ran."""

    def ablation(name: str) -> dict[str, Any] | None:
        mixed = results[name].get("mixed") or {}
        found: dict[str, Any] | None = (mixed.get(variant) if variant else mixed) or None
        return found.get("rrf_ablation") if found else None

    kept = [
        f"{n} {a['pairs_kept']} of {a['pairs_in_top5_before']}" for n in names if (a := ablation(n))
    ]
    if not kept:
        return []
    return [
        "",
        "Ablation: the same check with reciprocal-rank fusion of the image, caption and "
        "description searches (fused from their API results; the gateway's fusion before "
        "`service/search/fusion.py`), matching photos kept in its top 5: " + "; ".join(kept) + ".",
    ]
