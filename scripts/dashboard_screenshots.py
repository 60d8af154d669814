"""Make the admin dashboard's screenshots (docs/screenshots/*.png, shown in the README) from a
real run of its browser tests: `clipsearch serve` on the tiny bundles, Debian's Chromium.

    python scripts/dashboard_screenshots.py            # write docs/screenshots/
    python scripts/dashboard_screenshots.py --out DIR  # somewhere else

Each test saves the page it checked (login, overview, collections, jobs, search, rollouts) when
CLIPSEARCH_SCREENSHOTS names a folder; the pictures are of pages the tests just asserted on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = "tests/service/admin/test_dashboard_browser.py"
PAGES = ("login", "overview", "collections", "jobs", "search", "rollouts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CLIPSEARCH_SCREENSHOTS": str(out), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "browser",
               "--timeout", "300", TESTS]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, check=False)
    if done.returncode != 0:
        print("the browser tests failed: screenshots not trusted", file=sys.stderr)
        return done.returncode
    missing = [p for p in PAGES if not (out / f"{p}.png").is_file()]
    if missing:
        print(f"no screenshot of {', '.join(missing)} in {out}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(f'{p}.png' for p in PAGES)} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
