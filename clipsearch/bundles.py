"""Which bundle a process serves: a folder, a zoo name, the shipped default, or the tiny test
bundle that ``make run`` builds when the zoo has no default.

Serving never builds a bundle: the tiny test bundle is made offline (``clipsearch models tiny``,
which ``make run`` calls on a checkout without ``models/zoo/photo``) into
``<data_dir>/bundles/tiny-test``, and only found there.
"""

from __future__ import annotations

import logging
from pathlib import Path

from service.core.bundle.manifest import MANIFEST_NAME, Bundle, load_bundle
from service.core.config import Settings
from service.core.errors import ClipsearchError, ErrorType

log = logging.getLogger(__name__)

# The shipped bundles: data beside the code (``models/zoo``), read as files, never imported.
ZOO_DIR = Path(__file__).resolve().parents[1] / "models" / "zoo"
# What a newcomer meets: real photographs (models/zoo/photo). The synthetic-scenes model is the
# zoo's "scenes" bundle.
DEFAULT_ZOO_BUNDLE = "photo"
TINY_BUNDLE = "tiny-test"


def tiny_bundle_dir(settings: Settings) -> Path:
    """Where ``make run`` builds the tiny test bundle for this data dir."""
    return settings.data_dir / "bundles" / TINY_BUNDLE


def zoo_names() -> list[str]:
    return sorted(p.name for p in ZOO_DIR.glob("*") if (p / MANIFEST_NAME).is_file())


def resolve_bundle(settings: Settings, *, quiet: bool = False) -> Path:
    """The bundle folder to serve: ``settings.bundle`` (a folder or a zoo name, or ``tiny-test``
    once built), else the zoo's default, else the tiny test bundle if it was built. The choice
    is logged unless ``quiet`` (a check before start-up, which logs it again)."""
    tiny = tiny_bundle_dir(settings)
    if settings.bundle:
        candidate = Path(settings.bundle).expanduser()
        for folder in (candidate, ZOO_DIR / settings.bundle):
            if (folder / MANIFEST_NAME).is_file():
                return folder
        if settings.bundle == TINY_BUNDLE and (tiny / MANIFEST_NAME).is_file():
            return tiny
        raise ClipsearchError(
            ErrorType.bundle_invalid,
            f"bundle {settings.bundle!r} is neither a bundle folder nor a zoo name: set "
            "CLIPSEARCH_BUNDLE (or --bundle) to one"
            + (f"; build the tiny test bundle with `clipsearch models tiny {tiny}`"
               if settings.bundle == TINY_BUNDLE else ""),
            {"zoo": zoo_names()},
        )  # fmt: skip
    default = ZOO_DIR / DEFAULT_ZOO_BUNDLE
    if (default / MANIFEST_NAME).is_file():
        if not quiet:
            log.info("serving the shipped default bundle from %s", default)
        return default
    if (tiny / MANIFEST_NAME).is_file():
        (log.debug if quiet else log.warning)(
            "no shipped default bundle in %s: serving the tiny test bundle from %s (text search "
            "over captions and descriptions works; text→image search is not semantic with it)",
            ZOO_DIR,
            tiny,
        )
        return tiny
    raise ClipsearchError(
        ErrorType.bundle_invalid,
        f"no bundle to serve: {default} is missing and CLIPSEARCH_BUNDLE is unset. Set "
        "CLIPSEARCH_BUNDLE to a bundle folder or zoo name, point CLIPSEARCH_ENCODER__ENDPOINTS "
        f"at encoder workers, or build the tiny test bundle: `clipsearch models tiny {tiny}` "
        "(`make run` does this)",
        {"zoo": zoo_names()},
    )


def load_configured_bundle(settings: Settings) -> Bundle:
    bundle = load_bundle(resolve_bundle(settings))
    log.info("bundle %s loaded from %s", bundle.manifest.ref, bundle.root)
    return bundle
