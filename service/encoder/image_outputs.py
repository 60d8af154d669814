"""What a bundle's image tower returns per image, and how its raw outputs become
:class:`~service.core.embeddings.ImageEmbedding` records.

Every tower has the joint-space output (the ``image`` vector). A bundle may add, from the same
forward, pooled visual features (the ``visual`` vector, for image→image search) and its top
classes (ids and probabilities into ``labels.json``), which ingestion turns into a textual
description of an uncaptioned image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.core.bundle.labels import load_labels
from service.core.bundle.manifest import Bundle
from service.core.embeddings import ImageEmbedding, Label
from service.core.errors import ClipsearchError, ErrorType
from service.encoder.arrays import l2_normalize


def checked_rows(out: np.ndarray, n: int, dim: int, name: str) -> np.ndarray:
    """``out`` as ``n`` L2-normalised float32 rows of ``dim``, or the bundle is wrong."""
    if out.shape != (n, dim):
        raise ClipsearchError(
            ErrorType.bundle_invalid,
            f"{name} returned shape {out.shape}; the manifest says ({n}, {dim})",
        )
    # Always normalise: a no-op for bundles whose outputs already are.
    return l2_normalize(out.astype(np.float32, copy=False))


class ImageOutputs:
    def __init__(self, bundle: Bundle) -> None:
        m = bundle.manifest
        it = m.image_tower
        self._file = it.file
        self._dim = m.spaces.image
        self._visual_dim = m.spaces.visual
        self.names = [it.output_name]
        if it.visual_output_name:
            self.names.append(it.visual_output_name)
        self._classes: tuple[tuple[str, tuple[str, ...]], ...] = ()
        self._top_k = 0
        if it.labels is not None:
            self.names += [it.labels.ids_output_name, it.labels.scores_output_name]
            labels = load_labels(bundle.path(it.labels.file))
            self._classes = tuple((c.name, c.broader) for c in labels.classes)
            self._top_k = it.labels.top_k

    def finish(self, outs: Sequence[np.ndarray], n: int) -> list[ImageEmbedding]:
        """The postprocess stage: the raw outputs (in :attr:`names` order) of ``n`` images."""
        joint = checked_rows(outs[0], n, self._dim, self._file)
        visual = None
        if self._visual_dim is not None:
            visual = checked_rows(outs[1], n, self._visual_dim, self._file)
        labels: list[tuple[Label, ...]] = [()] * n
        if self._classes:
            labels = self._labels(outs[-2], outs[-1], n)
        return [
            ImageEmbedding(joint[i], None if visual is None else visual[i], labels[i])
            for i in range(n)
        ]

    def _labels(self, ids: np.ndarray, scores: np.ndarray, n: int) -> list[tuple[Label, ...]]:
        if ids.shape != (n, self._top_k) or scores.shape != (n, self._top_k):
            raise ClipsearchError(
                ErrorType.bundle_invalid,
                f"{self._file} returned labels of shape {ids.shape}/{scores.shape}; "
                f"the manifest says ({n}, {self._top_k})",
            )
        if ids.size and (ids.min() < 0 or ids.max() >= len(self._classes)):
            raise ClipsearchError(
                ErrorType.bundle_invalid,
                f"{self._file} named a class outside its {len(self._classes)} labels",
            )
        out = []
        for row_ids, row_scores in zip(ids.tolist(), scores.tolist(), strict=True):
            out.append(
                tuple(
                    Label(self._classes[i][0], float(s), self._classes[i][1])
                    for i, s in zip(row_ids, row_scores, strict=True)
                )
            )
        return out
