"""What the Result panel and the camera's custom properties say about a solved camera (bpy-free).

A bundle whose camera was solved (``--camera solve`` or Blender's camera solve) carries each frame's
mean reprojection error in pixels (``camera.solve`` in the manifest). The importer keys it on the
camera as the custom property ``genmojo_solve_error_px`` (one key per registered frame, so the Graph
Editor shows the error over time) and stores the lines below as ``genmojo_solve_summary``.
"""

from __future__ import annotations

from .bundle import CameraSolveInfo

ERROR_PROP = "genmojo_solve_error_px"
REGISTERED_PROP = "genmojo_solve_registered"
SUMMARY_PROP = "genmojo_solve_summary"


def _frames(frames: list[int], first_frame: int, limit: int = 8) -> str:
    shown = ", ".join(str(first_frame + t) for t in frames[:limit])
    return shown + (f" (+{len(frames) - limit})" if len(frames) > limit else "")


def summary_lines(info: CameraSolveInfo, first_frame: int = 1, worst: int = 3) -> list[str]:
    """Lines for the panel: the method, min / mean / max error, the worst frames and the interpolated
    ones, with frames numbered as in the imported scene (``first_frame`` is the clip's first frame)."""
    s = info.summary(worst)
    title = {"colmap": "COLMAP", "blender": "Blender"}.get(info.method, info.method)
    if s.mean_px is None:
        return [f"Camera solve ({title}): no frame has an error"]
    lines = [f"Camera solve ({title}): {s.min_px:.2f} / {s.mean_px:.2f} / {s.max_px:.2f} px (min / mean / max)",
             f"Worst frames: {_frames(s.worst_frames, first_frame)}"]
    if s.interpolated:
        lines.append(f"Interpolated (not solved): {_frames(s.interpolated, first_frame)}")
    return lines


def error_keys(info: CameraSolveInfo, first_frame: int = 1) -> tuple[list[float], list[float]]:
    """(frames, errors) to key: the registered frames only (an unsolved frame has no error to show)."""
    keys = [(first_frame + t, e) for t, e in enumerate(info.error_px) if e is not None]
    return [float(f) for f, _ in keys], [float(e) for _, e in keys]
