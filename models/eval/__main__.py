"""``python -m models.eval BUNDLE [--n 1000] [--out DIR] [--baseline NAME=BUNDLE_DIR ...]``."""

from models.eval.cli import main

raise SystemExit(main())
