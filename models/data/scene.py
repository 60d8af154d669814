"""The :class:`Scene` record: objects, background, texts, and rendering on demand."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from models.data.render import render_scene
from models.data.texts import count_caption
from models.data.vocab import MAX_OBJECTS, SceneObject


@dataclass(frozen=True)
class Scene:
    """One synthetic scene. Texts are computed at generation; pixels only when asked for.

    ``captions`` maps each of ``CAPTION_KINDS`` to >= 2 distinct phrasings, [0] canonical;
    ``negatives`` maps each of ``NEGATIVE_KINDS`` to >= 1 caption that is false for the scene.
    ``noise`` (std, 0..255 units) and ``blur`` (radius, fraction of the side) are 0 for most
    scenes.
    """

    id: str
    split: str
    objects: tuple[SceneObject, ...]
    background: str
    captions: dict[str, tuple[str, ...]] = field(hash=False)
    description: str
    negatives: dict[str, tuple[str, ...]] = field(hash=False)
    tags: tuple[str, ...]
    held_out: bool
    seed: int
    noise: float = 0.0
    blur: float = 0.0

    def render(self, size: int = 128) -> Image.Image:
        """RGB ``size`` x ``size``; the same scene and size always give the same pixels."""
        return render_scene(
            self.objects,
            self.background,
            seed=self.seed,
            noise=self.noise,
            blur=self.blur,
            size=size,
        )

    @property
    def image(self) -> Image.Image:
        """``render(128)``, rendered afresh on each access (scenes hold no pixels)."""
        return self.render(128)

    @property
    def caption(self) -> str:
        return self.captions["short"][0]

    def count_captions(self) -> list[tuple[int, str]]:
        """``(n, caption)`` for n = 1..6 from one template; exactly one n is this scene's count."""
        return [(n, count_caption(n)) for n in range(1, MAX_OBJECTS + 1)]
