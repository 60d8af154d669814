"""``python -m models.photo --out models/zoo/photo``: build the photo bundle in one command.

The defaults are the dev sweep's choice. ``--top-k 1`` builds the "top-1 class name only"
ablation baseline from the same code; ``--colour-weight 0`` builds without the colour term, and
``--views 5`` adds the four quadrant views (models/photo/dev/EXTRAS.md measured both); ``--views 6``
(the whole picture at ``--crop-input`` px and five crops) and ``--flip`` are the variants
models/photo/dev/CROPS.md measured.
``--dev-root`` (the dev photos, unpacked by ``python -m models.photo.dev fetch --root DIR``)
adds measured dev figures to the card and BUILD.md; ``--bench`` adds the image tower's CPU
throughput.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

from models.photo.build import PhotoConfig, build_photo_bundle
from models.photo.classtext import TextConfig
from models.photo.report import build_md, write_build_md
from models.photo.tower import RULES, VARIANTS
from models.photo.vocab import TEMPLATE_SETS

DEFAULTS = PhotoConfig()
IMAGENET_CLASSES = 1000


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m models.photo", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="bundle folder (replaced)")
    p.add_argument("--variant", choices=("lite0", "lite2"), default=DEFAULTS.variant)
    p.add_argument(
        "--resize",
        choices=("shortest_edge_center_crop", "squash"),
        default=DEFAULTS.resize,
    )
    p.add_argument("--top-k", type=int, default=DEFAULTS.top_k, help="ConSE classes mixed")
    p.add_argument("--temperature", type=float, default=DEFAULTS.temperature)
    p.add_argument("--label-k", type=int, default=DEFAULTS.label_k, help="labels per image")
    p.add_argument(
        "--colour-weight",
        type=float,
        default=DEFAULTS.colour_weight,
        help="weight of the colour-term mix in image_embeds (0: none)",
    )
    p.add_argument(
        "--views",
        type=int,
        choices=(1, 5, 6),
        default=DEFAULTS.views,
        help="5: the whole picture and its quadrants (the input doubles in size); 6: the whole "
        "picture at --crop-input px and five crops of it (models/photo/dev/CROPS.md)",
    )
    p.add_argument("--crop-input", type=int, default=DEFAULTS.crop_input)
    p.add_argument("--rule", choices=RULES[1:], default=DEFAULTS.rule, help="--views 6 only")
    p.add_argument(
        "--flip", action="store_true", help="average the whole picture with its mirror image"
    )
    p.add_argument("--view-gate", type=float, default=DEFAULTS.view_gate)
    p.add_argument("--view-weight", type=float, default=DEFAULTS.view_weight)
    p.add_argument("--templates", choices=sorted(TEMPLATE_SETS), default=DEFAULTS.text.templates)
    p.add_argument("--synonyms", type=int, default=DEFAULTS.text.synonyms)
    p.add_argument("--hypernyms", type=int, default=DEFAULTS.text.hypernyms)
    p.add_argument("--hypernym-weight", type=float, default=DEFAULTS.text.hypernym_weight)
    p.add_argument("--text-precision", choices=("compact", "fp32"), default=DEFAULTS.text_precision)
    p.add_argument("--version", default=DEFAULTS.version)
    p.add_argument("--wordnet", type=Path, default=DEFAULTS.wordnet, help="WordNet data.noun")
    p.add_argument("--dev-root", type=Path, default=None, help="measure on the dev photos here")
    p.add_argument("--bench", action="store_true", help="measure image tower throughput")
    args = p.parse_args(argv)
    # Refused here, as usage errors, before any model loads (the builder would raise deep inside).
    checks = (
        (1 <= args.top_k <= IMAGENET_CLASSES, f"--top-k must be 1..{IMAGENET_CLASSES}"),
        (1 <= args.label_k <= IMAGENET_CLASSES, f"--label-k must be 1..{IMAGENET_CLASSES}"),
        (args.temperature > 0, "--temperature must be above 0"),
        (args.colour_weight >= 0, "--colour-weight must be 0 or more"),
        (args.synonyms >= 1, "--synonyms must be 1 or more"),
        (args.hypernyms >= 0, "--hypernyms must be 0 or more"),
        (args.hypernym_weight >= 0, "--hypernym-weight must be 0 or more"),
        (0 <= args.view_gate < 1, "--view-gate must be in [0, 1)"),
        (args.view_weight >= 0, "--view-weight must be 0 or more"),
        (
            args.views != 6 or args.crop_input > VARIANTS[args.variant].image_size,
            "--crop-input must be larger than the variant's image size",
        ),
        (args.crop_input <= 2 * VARIANTS[args.variant].image_size, "--crop-input too large"),
        (
            args.wordnet.is_file(),
            f"--wordnet {args.wordnet} is not a file (apt-get install wordnet-base)",
        ),
    )
    for ok, message in checks:
        if not ok:
            p.error(message)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = PhotoConfig(
        variant=args.variant,
        resize=args.resize,
        text_precision=args.text_precision,
        text=TextConfig(args.templates, args.synonyms, args.hypernyms, args.hypernym_weight),
        top_k=args.top_k,
        temperature=args.temperature,
        label_k=args.label_k,
        colour_weight=args.colour_weight,
        views=args.views,
        view_gate=args.view_gate,
        view_weight=args.view_weight,
        crop_input=args.crop_input,
        rule=args.rule,
        flip=args.flip,
        version=args.version,
        wordnet=args.wordnet,
    )
    start = time.perf_counter()
    result = build_photo_bundle(args.out, config, dev_root=args.dev_root, bench=args.bench)
    words = sys.argv[1:] if argv is None else argv
    text = build_md(
        command="python -m models.photo " + shlex.join(words),
        wall_s=time.perf_counter() - start,
        config=config,
        manifest=result.manifest,
        parity=result.parity,
        sizes=result.sizes,
        images_per_s=result.images_per_s,
    )
    write_build_md(result.out_dir / "BUILD.md", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
