"""The labelled tiny bundle: a valid bundle whose image tower names an image's dominant colour."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from models.tiny_labelled import COLOURS, TOP_K, VISUAL_DIM
from service.core.bundle.labels import load_labels
from service.core.bundle.manifest import load_bundle
from service.core.bundle.preprocess import image_to_tensor


def test_the_bundle_declares_and_ships_its_extras(tiny_labelled_bundle_dir: Path) -> None:
    m = load_bundle(tiny_labelled_bundle_dir).manifest  # checksums of labels.json too
    assert m.ref == "tiny-labelled@0.1.0"
    assert m.spaces.visual == m.image_tower.visual_dim == VISUAL_DIM
    assert m.image_tower.labels is not None and m.image_tower.labels.top_k == TOP_K
    assert "labels.json" in m.files
    labels = load_labels(tiny_labelled_bundle_dir / "labels.json")
    assert [c.id for c in labels.classes] == [name for name, _ in COLOURS]


def test_the_class_is_the_dominant_colour(tiny_labelled_bundle_dir: Path) -> None:
    from PIL import Image

    m = load_bundle(tiny_labelled_bundle_dir).manifest
    session = ort.InferenceSession(str(tiny_labelled_bundle_dir / "image.onnx"))
    names = [name for name, _ in COLOURS]
    for name, rgb in COLOURS:
        pixels = image_to_tensor(Image.new("RGB", (32, 32), rgb), m.image_tower)[None]
        ids, scores, visual = session.run(
            ["label_ids", "label_scores", "visual_embeds"], {"pixel_values": pixels}
        )
        assert names[int(ids[0, 0])] == name
        assert 1.0 >= scores[0, 0] > scores[0, 1] > 0.0
        assert visual.shape == (1, VISUAL_DIM)
