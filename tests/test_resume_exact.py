"""A stopped run, resumed, ends bit-identical to an uninterrupted one, wherever it was stopped.

The stop goes through the mechanism the command line uses: SIGINT/SIGTERM set a flag that the fit polls
before each step (``should_stop``); here the flag is raised once a given step has been reported, so that
each stop lands at a known point: inside stage 1 of the first object, at the boundary between two objects, inside
stage 1 of the second object, and inside stage 2 after a periodic checkpoint. The runs are in-process and
small (2 objects, short stage 1 with densification, short stage 2) so that the whole file stays cheap.
"""

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from backend import pipeline
from backend.config import get_preset, with_overrides
from backend.errors import Cancelled
from backend.progress import Reporter
from conftest import load_script

STAGE1_ITERS = 16
STAGE2_ITERS = 6
CHECKPOINT_EVERY = 2


def _config():
    """cpu-tiny, shortened and with fewer Gaussians; stage 1 densifies (and splits: the draws gsplat
    makes) every 4 steps."""
    return with_overrides(get_preset("cpu-tiny"), fit={"checkpoint_every": CHECKPOINT_EVERY},
                          stage1={"iterations": STAGE1_ITERS, "densify_every": 4, "lr_means_steps": 8,
                                  "num_points": 100, "max_gaussians": 300, "grow_grad2d": 1e-5},
                          preview={"passes": 1, "track_grid": 4})


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("exact") / "clip"
    load_script("make_synthetic_clip").make_clip(out, width=64, height=64, frames=5, objects=2, seed=1)
    return out


class StopAt(Reporter):
    """A reporter that raises the stop flag once ``stage`` has reported step ``step`` (None: never), as
    a SIGTERM arriving during that step would; the fit notices it before its next step."""

    def __init__(self, stage: str | None = None, step: int = 0):
        super().__init__(pipeline.STAGES, out=io.StringIO(), log=io.StringIO(), every_s=0)
        self.at, self.stop = (stage, step), False

    def progress(self, step, total, losses, every_s=None, force=False):
        super().progress(step, total, losses, every_s, force)
        self.stop |= (self._stage, step >= self.at[1]) == (self.at[0], True)

    def __call__(self) -> bool:
        return self.stop


def _run(clip: Path, out: Path, name: str, *, stop: tuple[str, int] | None = None, resume: bool = False,
         method: str = "genmojo", cfg=None):
    """One run (of ``cfg``, default ``_config()``); returns (bundle or None, the Cancelled error or None, the log)."""
    req = pipeline.RunRequest(data_dir=clip / "JPEGImages", mask_dir=clip / "Annotations", out_dir=out,
                              save_name=name, device="cpu", iterations=STAGE2_ITERS, resume=resume)
    reporter = StopAt(*stop) if stop else StopAt()
    try:
        path = pipeline.run(req, replace(cfg or _config(), method=method), reporter, should_stop=reporter)
    except Cancelled as e:
        return None, e, reporter.log_stream.getvalue()
    return path, None, reporter.log_stream.getvalue()


def _arrays(bundle: Path) -> dict[str, np.ndarray]:
    """Every array of every .npz file of a bundle, keyed by file and name."""
    out = {}
    for f in sorted(bundle.rglob("*.npz")):
        with np.load(f, allow_pickle=False) as z:
            for k in z.files:
                out[f"{f.relative_to(bundle)}:{k}"] = np.asarray(z[k])
    return out


def _assert_identical(a: Path, b: Path, when: str = "after resuming") -> None:
    A, B = _arrays(a), _arrays(b)
    assert A and sorted(A) == sorted(B)
    differ = [k for k in A if not np.array_equal(A[k], B[k])]
    assert not differ, f"arrays differ {when}: {differ}"


@pytest.fixture(scope="module")
def reference(clip, tmp_path_factory):
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("ref")
    path, err, _ = _run(clip, out, "ref")
    assert err is None
    return path


def test_stage_one_splits_gaussians(clip, tmp_path, monkeypatch):
    """The shortened stage 1 really splits Gaussians, so the tests below cover gsplat's random draws."""
    from backend.optim.densify import CappedStrategy

    splits = []
    original = CappedStrategy._grow_gs

    def counting(self, params, optimizers, state, step):
        n_dupli, n_split = original(self, params, optimizers, state, step)
        splits.append(n_split)
        return n_dupli, n_split

    monkeypatch.setattr(CappedStrategy, "_grow_gs", counting)
    _run(clip, tmp_path, "split", stop=("objects", STAGE1_ITERS))
    assert len(splits) == STAGE1_ITERS // 4 and sum(splits) > 0  # refined at steps 4, 8, 12, 16


@pytest.mark.parametrize("stop", [
    ("objects", STAGE1_ITERS),  # the first object done: stopped before the second object's first step
    ("objects", STAGE1_ITERS + 6),  # inside stage 1 of the second object
    ("fit", CHECKPOINT_EVERY + 1),  # inside stage 2, a step after its first periodic checkpoint
], ids=["between-objects", "stage1-second-object", "stage2"])
def test_resumed_run_is_bit_identical(clip, reference, tmp_path, stop):
    path, err, _ = _run(clip, tmp_path, "r", stop=stop)
    assert path is None and err is not None and "--resume" in err.hint
    assert (tmp_path / ".r.checkpoint" / "state.pt").is_file()
    path, err, log = _run(clip, tmp_path, "r", resume=True)
    assert err is None, err
    assert "resuming" in log
    _assert_identical(reference, path)
    assert not (tmp_path / ".r.checkpoint").exists()


def test_stop_in_the_first_object_saves_nothing_and_a_rerun_is_identical(clip, reference, tmp_path):
    """Before any object is finished there is nothing worth keeping: no checkpoint, and the same command
    run again (without --resume) gives the uninterrupted result."""
    path, err, _ = _run(clip, tmp_path, "r", stop=("objects", 5))
    assert path is None and "stage 1" in str(err)
    assert not (tmp_path / ".r.checkpoint").exists()
    path, err, _ = _run(clip, tmp_path, "r")
    assert err is None
    _assert_identical(reference, path)


def test_stopped_twice_resumed_twice_is_bit_identical(clip, reference, tmp_path):
    """Stopped in stage 1, resumed and stopped again in stage 2 (before its first checkpoint), resumed."""
    _, err, _ = _run(clip, tmp_path, "r", stop=("objects", STAGE1_ITERS + 3))
    assert err is not None
    _, err, _ = _run(clip, tmp_path, "r", stop=("fit", 2), resume=True)
    assert err is not None and "stopped at step 2" in str(err)
    path, err, _ = _run(clip, tmp_path, "r", resume=True)
    assert err is None
    _assert_identical(reference, path)


def test_skeleton_resumed_run_is_bit_identical(clip, tmp_path):
    """The rigid baseline too: stopped a step after its first periodic checkpoint, resumed."""
    ref, err, _ = _run(clip, tmp_path, "ref", method="skeleton")
    assert err is None
    _, err, _ = _run(clip, tmp_path, "r", stop=("fit", CHECKPOINT_EVERY + 1), method="skeleton")
    assert err is not None and (tmp_path / ".r.checkpoint" / "state.pt").is_file()
    path, err, log = _run(clip, tmp_path, "r", resume=True, method="skeleton")
    assert err is None and "resuming from the checkpoint at step 3" in log
    _assert_identical(ref, path)


def test_mirrored_backs_rerun_bit_identical_on_two_threads(clip, tmp_path):
    """Two runs with ``stage1.back_prior=mirror`` on 2 torch threads give the same bundle, bit for bit.

    The mirror doubles each object's Gaussians, and past 32768 scattered elements ATen's CPU
    ``index_put_(accumulate=True)``, the backward of plain advanced indexing, runs as atomic float adds on
    several threads, in an order that changes from run to run. Stage 2's kNN losses used to gather that
    way; they now sum their gradient in a fixed order (``kernels.knn_losses_torch.gather_neighbours``).
    16 neighbours, as the GPU presets, put the short fit's mirrored objects past that size (checked)."""
    import torch

    knn = 16
    cfg = with_overrides(_config(), stage1={"back_prior": "mirror", "num_points": 800, "max_gaussians": 800},
                         stage2={"knn": knn})
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = [_run(clip, tmp_path, name, cfg=cfg) for name in ("a", "b")]
    finally:
        torch.set_num_threads(threads)
    assert all(err is None for _, err, _ in runs)
    paths = [path for path, _, _ in runs]
    counts = [v.shape[1] for k, v in _arrays(paths[0]).items() if k.endswith("frames.npz:means")]
    assert counts and max(counts) * knn * 3 >= 32768, counts  # the size where ATen's scatter goes parallel
    _assert_identical(*paths, when="between two runs")
