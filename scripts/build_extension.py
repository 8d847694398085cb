"""Build the installable extension zip, ``dist/genmojo-<version>.zip``, without a Blender binary.

Blender's extension tooling (``blender_ext.py``) is plain, standard-library Python and ships inside the
``bpy`` wheel, so this script runs it with any Python 3.11+. The extension's package is the
``genmojo_blender/`` folder, while the manifest lives at the repository root; Blender expects the
manifest beside the package's ``__init__.py``, so both are staged into a temporary folder first and
the zip is built from there (the manifest is validated as part of the build, tags included).

Usage::

    python scripts/build_extension.py [--output-dir dist] [--blender-ext PATH] [--validate-only]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "genmojo_blender"
MANIFEST = ROOT / "blender_manifest.toml"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*")


def find_blender_ext() -> tuple[Path, Path | None]:
    """Locate ``blender_ext.py`` and Blender's tag list (``tags.py``) inside the installed bpy wheel,
    without importing bpy. Raises FileNotFoundError with what to do."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.origin:
        raise FileNotFoundError("bpy is not installed in this Python; pass --blender-ext PATH "
                                "(scripts/addons_core/bl_pkg/cli/blender_ext.py of a Blender install)")
    base = Path(spec.origin).parent
    for version_dir in sorted(base.glob("[0-9]*.[0-9]*"), reverse=True):
        cli = version_dir / "scripts" / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
        tags = version_dir / "scripts" / "modules" / "_bpy_internal" / "extensions" / "tags.py"
        if cli.is_file():
            return cli, tags if tags.is_file() else None
    raise FileNotFoundError(f"blender_ext.py not found under {base}")


def read_manifest() -> dict:
    with open(MANIFEST, "rb") as fh:
        return tomllib.load(fh)


def stage(dest: Path) -> Path:
    """Copy the package contents and the manifest into ``dest/genmojo``; returns that folder."""
    src = dest / read_manifest()["id"]
    shutil.copytree(PACKAGE, src, ignore=_IGNORE)
    shutil.copy2(MANIFEST, src / "blender_manifest.toml")
    return src


def run_cli(cli: Path, args: list[str]) -> None:
    cp = subprocess.run([sys.executable, str(cli), *args], capture_output=True, text=True)
    sys.stdout.write(cp.stdout)
    sys.stderr.write(cp.stderr)
    if cp.returncode != 0:
        raise SystemExit(f"blender_ext {args[0]} failed (exit {cp.returncode})")


def build(output_dir: Path, cli: Path, tags: Path | None, validate_only: bool = False) -> Path | None:
    """Stage, validate and (unless ``validate_only``) build; returns the zip path."""
    m = read_manifest()
    tag_args = ["--valid-tags", str(tags)] if tags else []
    with tempfile.TemporaryDirectory(prefix="genmojo-ext-") as tmp:
        src = stage(Path(tmp))
        run_cli(cli, ["validate", *tag_args, str(src)])
        if validate_only:
            return None
        output_dir.mkdir(parents=True, exist_ok=True)
        out = output_dir / f"{m['id']}-{m['version']}.zip"
        if out.exists():
            out.unlink()
        run_cli(cli, ["build", "--source-dir", str(src), "--output-filepath", str(out), *tag_args])
    if not out.is_file():
        raise SystemExit(f"build reported success but {out} is missing")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output-dir", type=Path, default=ROOT / "dist")
    ap.add_argument("--blender-ext", type=Path, help="path to blender_ext.py (default: from the bpy wheel)")
    ap.add_argument("--valid-tags", type=Path, help="Blender's tags.py or a JSON tag list")
    ap.add_argument("--validate-only", action="store_true", help="only validate the staged extension")
    args = ap.parse_args(argv)
    if args.blender_ext:
        cli, tags = args.blender_ext, args.valid_tags
    else:
        cli, found_tags = find_blender_ext()
        tags = args.valid_tags or found_tags
    out = build(args.output_dir.resolve(), cli, tags, args.validate_only)
    print(f"validated {MANIFEST}" if out is None else f"built {out}")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
