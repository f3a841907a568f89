"""Score files: what is saved is what is loaded, and every damaged or inconsistent file is one clear line."""
from __future__ import annotations

import numpy as np
import pytest

from flow.errors import InputError
from pipelines.scoring.scores import load_scores, save_scores

CLASSES = ["Biking", "Diving", "Fencing"]
IDS = ["Biking/v_1", "Diving/v_2", "Fencing/v_3", "Biking/v_4"]
LABELS = [0, 1, 2, 0]


def _save(path, **changes):
    values = dict(video_ids=IDS, labels=LABELS, logits=np.arange(12, dtype=np.float64).reshape(4, 3),
                  classes=CLASSES, split=2, subset="val", stream="sta-mars", protocol="mars:16")
    values.update(changes)
    return save_scores(path, **values)


def _raw_npz(path, **changes):
    """A file written without save_scores' checks, to stand for what other tools or damage may produce."""
    arrays = dict(video_ids=np.array(IDS), labels=np.array(LABELS, dtype=np.int64),
                  logits=np.zeros((4, 3), dtype=np.float32), classes=np.array(CLASSES), split=np.int64(1),
                  subset=np.str_("test"), stream=np.str_("rgb"), protocol=np.str_("mars:16"))
    arrays.update(changes)
    arrays = {key: value for key, value in arrays.items() if value is not None}
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def test_round_trip_keeps_values_and_types(tmp_path):
    features = np.ones((4, 7), dtype=np.float64)
    path = _save(tmp_path / "s.npz", features=features)
    scores = load_scores(path)
    assert scores.video_ids.tolist() == IDS
    assert scores.labels.dtype == np.int64 and scores.labels.tolist() == LABELS
    assert scores.logits.dtype == np.float32 and scores.logits[3].tolist() == [9.0, 10.0, 11.0]
    assert scores.features.shape == (4, 7) and scores.features.dtype == np.float32
    assert scores.classes == tuple(CLASSES)
    assert (scores.split, scores.subset, scores.stream, scores.protocol) == (2, "val", "sta-mars", "mars:16")
    assert scores.num_videos == 4 and scores.path == path
    with np.load(path, allow_pickle=False) as raw:  # plain arrays: readable without pickle by any numpy user
        assert "features" in raw.files and raw["video_ids"].dtype.kind == "U"
    assert load_scores(_save(tmp_path / "nofeat.npz")).features is None


def test_save_replaces_atomically_and_leaves_no_temporary_files(tmp_path):
    path = _save(tmp_path / "sub" / "s.npz")
    _save(path, logits=np.zeros((4, 3)))
    assert load_scores(path).logits.sum() == 0
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.npz"]


@pytest.mark.parametrize("changes, fragment", [
    (dict(labels=[0, 1, 2]), "row counts disagree"),
    (dict(labels=[0, 1, 3, 0]), "labels must lie in 0..2"),
    (dict(subset="dev"), "subset 'dev'"),
    (dict(stream="audio"), "stream 'audio'"),
])
def test_save_refuses_inconsistent_arrays_without_writing(tmp_path, changes, fragment):
    with pytest.raises(ValueError, match=fragment):
        _save(tmp_path / "s.npz", **changes)
    assert list(tmp_path.iterdir()) == []


def _truncated(tmp_path):
    path = _save(tmp_path / "s.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _pickled(tmp_path):
    return _raw_npz(tmp_path / "s.npz", video_ids=np.array(IDS, dtype=object))


def _npy(tmp_path):
    path = tmp_path / "s.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.zeros(3))
    return path


def _flipped_byte(tmp_path):
    """Damage inside one member: the archive's directory is intact, the member's checksum is not."""
    path = _save(tmp_path / "s.npz", logits=np.full((4, 3), 7.0))
    data = bytearray(path.read_bytes())
    at = data.index(np.float32(7.0).tobytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("make, fragment", [
    (lambda tmp: tmp / "absent.npz", "score file not found"),
    (lambda tmp: (tmp / "s.npz").write_bytes(b"\x00garbage" * 20) and tmp / "s.npz", "no zip signature"),
    (_truncated, "not a readable .npz"),
    (_pickled, "holds pickled objects"),
    (_npy, "not an .npz archive"),
    (_flipped_byte, "not a readable .npz"),
    (lambda tmp: _raw_npz(tmp / "s.npz", protocol=None, stream=None), "missing stream, protocol"),
    (lambda tmp: _raw_npz(tmp / "s.npz", logits=np.zeros((4, 2), np.float32)), "2 columns but there are 3"),
    (lambda tmp: _raw_npz(tmp / "s.npz", logits=np.zeros((4, 3), np.int64)), "'logits' must be a 2-D float"),
    (lambda tmp: _raw_npz(tmp / "s.npz", labels=np.array([0, 1, 5, 0])), "labels must lie in 0..2"),
    (lambda tmp: _raw_npz(tmp / "s.npz", video_ids=np.array(IDS[:3] + IDS[:1])), "duplicates"),
    (lambda tmp: _raw_npz(tmp / "s.npz", logits=np.full((4, 3), np.nan, np.float32)), "NaN"),
    (lambda tmp: _raw_npz(tmp / "s.npz", subset=np.str_("dev")), "subset 'dev'"),
    (lambda tmp: _raw_npz(tmp / "s.npz", split=np.str_("one")), "'split' must be a single integer"),
    (lambda tmp: _raw_npz(tmp / "s.npz", classes=np.arange(3)), "'classes' must be a 1-D string array"),
])
def test_bad_files_raise_one_line_naming_the_file(tmp_path, make, fragment):
    path = make(tmp_path)
    with pytest.raises(InputError) as caught:
        load_scores(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert fragment in message
