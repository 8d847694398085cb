"""Shared test set-up: the repository root and tests/ on sys.path, Blender kept out of $HOME."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

# bpy writes its user resources and caches under $HOME unless told otherwise.
_scratch = Path(os.environ.get("GENMOJO_TEST_SCRATCH", "/tmp/genmojo-test-home"))
os.environ.setdefault("BLENDER_USER_RESOURCES", str(_scratch / "blender"))
os.environ.setdefault("XDG_CACHE_HOME", str(_scratch / "cache"))
