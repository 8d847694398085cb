"""The Clip field's meaning: a folder, one of its frames (= the folder's sequence), or a movie."""

from __future__ import annotations

from genmojo_blender.core.clip_source import resolve_clip


def test_a_picked_frame_stands_for_its_folders_sequence(tmp_path):
    frames = tmp_path / "JPEGImages"
    frames.mkdir()
    for i in range(3):
        (frames / f"{i:05d}.JPG").write_bytes(b"x")
    src = resolve_clip(str(frames / "00000.JPG"))
    assert (src.path, src.is_sequence, src.picked_frame) == (str(frames), True, str(frames / "00000.JPG"))
    assert resolve_clip(str(frames)) == type(src)(str(frames), True)


def test_a_movie_stays_a_movie_and_missing_paths_pass_through(tmp_path):
    movie = tmp_path / "shot.mp4"
    movie.write_bytes(b"x")
    assert (resolve_clip(str(movie)).path, resolve_clip(str(movie)).is_sequence) == (str(movie), False)
    missing = str(tmp_path / "nope.png")  # not a file: left for the request's own "Clip not found"
    assert (resolve_clip(missing).path, resolve_clip(missing).is_sequence) == (missing, False)
    assert resolve_clip("").path == ""
