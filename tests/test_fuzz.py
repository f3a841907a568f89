"""Property-based fuzzing of every parser a user's file reaches.

The property, for every input: the parser returns, or raises the project's one-line input error (``InputError``;
``ValueError`` where that is the documented contract, as for ``parse_sta``, and ``CheckpointError`` for
``load_pretrained``), within a second. Any other exception is a bug. ``PARSERS`` lists each parser with its input
strategy and its allowed errors; ``benchmarks/fuzz.py`` runs the same table with many more examples. What the
detection readers accept is also evaluated under both protocols, with numpy's warnings as errors.
"""
from __future__ import annotations

import dataclasses
import io
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flow.errors import InputError

EXAMPLES = 250  # per parser in the test suite; benchmarks/fuzz.py runs 10,000 and more, with fresh seeds
# the same inputs on every run, so the suite passes or fails on the code alone; new inputs come from benchmarks/fuzz.py
SETTINGS = settings(max_examples=EXAMPLES, deadline=1000, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DETECTION_SETTINGS = settings(SETTINGS, max_examples=100)  # three readers of one format family: fewer each


def check_one_line(parse: Callable[[Any], Any], value: Any, allowed: tuple[type[BaseException], ...]) -> None:
    """The property: ``parse(value)`` succeeds or raises an allowed error whose message is one line."""
    try:
        parse(value)
    except allowed as exc:
        assert len(str(exc).splitlines()) <= 1, repr(str(exc))


@pytest.fixture(scope="module", autouse=True)
def _imported():
    """Import torch and the stages once, before the first example: an example's second is its own parsing time."""
    config_classes()
    parse_pretrained_payload({})
    fixed_truths()


# -- split files ---------------------------------------------------------------------------------------------------
_WORDS = st.sampled_from(["Run", "Walk", "left", "a b", "Ü", "..", ".", "", "x.avi", "v_01", "1", "0", "-1", "99",
                          "/abs", "C:", "\\", "\ufeff", '"', ",", " ", "\t", "\x00", "9" * 30])
_TOKEN = st.one_of(_WORDS, st.text(max_size=8))
_LINE = st.lists(_TOKEN, max_size=4).map(lambda parts: "".join(parts) if len(parts) < 2 else
                                          f"{parts[0]}/{parts[1]}.avi " + " ".join(parts[2:]))
_EOL = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def text_file(draw, lines=_LINE, valid: tuple[str, ...] = ()) -> bytes:
    """A list file: a valid one with a few lines inserted, replaced or deleted, or lines from the grammar's tokens,
    or raw bytes now and then (other encodings, garbage)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=64))
    if valid and draw(st.booleans()):
        result = list(valid)
        for _ in range(draw(st.integers(0, 2))):
            where = draw(st.integers(0, len(result)))
            action = draw(st.sampled_from(["insert", "replace", "delete"]))
            if action == "insert" or where == len(result):
                result.insert(where, draw(lines))
            elif action == "replace":
                result[where] = draw(lines)
            else:
                del result[where]
    else:
        result = draw(st.lists(lines, max_size=6))
    text = draw(_EOL).join(result)
    return (("\ufeff" if draw(st.booleans()) else "") + text).encode()


_CLASS_INDEX = st.tuples(st.integers(-1, 4), st.sampled_from(["Run", "Walk", "left", "Run"])).map(
    lambda pair: f"{pair[0]} {pair[1]}")
_UCF_ENTRY = st.tuples(st.sampled_from(["Run", "Walk", "left", "..", ""]), st.sampled_from(["v1", "v2", "../x", ""]),
                       st.sampled_from(["", " 1", " 2", " 0", " 9", " x", " 1 1"])).map(
    lambda t: f"{t[0]}/{t[1]}.avi{t[2]}")
_MMACTION_ENTRY = st.tuples(st.sampled_from(["Run/v1", "Walk/v2", "v3", "../v", "/abs/v"]),
                            st.sampled_from(["", " 17"]), st.sampled_from([" 0", " 1", " -1", " x", ""])).map("".join)
_CSV_ROW = st.lists(st.sampled_from(["video", "subset", "class", "split", "Run/v1.avi", "v2", "train", "test",
                                     "Walk", "1", "2", "", '"', "x"]), max_size=5).map(",".join)


@st.composite
def split_folder(draw) -> dict[str, bytes]:
    """Files of a split folder in one of the four formats the readers recognise."""
    kind = draw(st.sampled_from(["ucf", "hmdb", "mmaction", "csv"]))
    mixed = st.one_of(_LINE, _UCF_ENTRY)
    if kind == "ucf":
        names = {"classInd.txt": text_file(st.one_of(_CLASS_INDEX, _LINE), ("1 Run", "2 Walk")),
                 "trainlist01.txt": text_file(mixed, ("Run/v1.avi 1", "Walk/v2.avi 2")),
                 "testlist01.txt": text_file(mixed, ("Run/v3.avi", "Walk/v4.avi"))}
    elif kind == "hmdb":
        names = {f"{c}_test_split1.txt": text_file(st.one_of(_LINE, st.tuples(
            st.sampled_from(["v1.avi", "../v.avi", "a b.avi"]), st.sampled_from([" 0", " 1", " 2", " 3"])).map(
            "".join)), (f"{c}_1.avi 1", f"{c}_2.avi 2", f"{c}_3.avi 0")) for c in ("Run", "Walk")}
    elif kind == "mmaction":
        entries = st.one_of(_LINE, _MMACTION_ENTRY)
        names = {"d_train_split_1_rawframes.txt": text_file(entries, ("Run/v1 17 0", "Walk/v2 17 1")),
                 "d_val_split_1_rawframes.txt": text_file(entries, ("Run/v3 0", "Walk/v4 1"))}
    else:
        names = {"split.csv": text_file(st.one_of(_CSV_ROW, _LINE), (
            "video,subset,split", "Run/v1.avi,train,1", "Walk/v2.avi,train,1", "Run/v3.avi,test,1",
            "Walk/v4.avi,test,1"))}
    return {name: draw(content) for name, content in names.items() if draw(st.integers(0, 9))}


def parse_split_folder(files: dict[str, bytes]) -> None:
    from pipelines.data.splits import load_split

    with tempfile.TemporaryDirectory() as folder:
        for name, content in files.items():
            Path(folder, name).write_bytes(content)
        target = Path(folder, "split.csv") if "split.csv" in files else Path(folder)
        load_split(target, 1)


# -- TOML configs of every stage -----------------------------------------------------------------------------------
def config_classes() -> dict[str, type]:
    from flow.extract import ExtractConfig
    from flow.importer import ImportConfig
    from pipelines.stages.evaluate import EvaluateConfig
    from pipelines.stages.fuse import FuseConfig
    from pipelines.stages.predict import PredictConfig
    from pipelines.stages.run import DataConfig
    from pipelines.data.synth import SynthConfig
    from pipelines.stages.train import TrainConfig
    from pipelines.detection.detect import DetectConfig
    from pipelines.detection.pipeline import DetectionRunConfig
    from pipelines.detection.rc3d import RC3DConfig
    from pipelines.detection.rc3d_detect import RC3DDetectConfig
    from pipelines.detection.scnn import DetectorConfig
    from pipelines.data.untrimmed import UntrimmedConfig
    from pipelines.inference.features import FeaturesConfig

    return {"extract": ExtractConfig, "import": ImportConfig, "evaluate": EvaluateConfig, "fuse": FuseConfig,
            "predict": PredictConfig, "data": DataConfig, "synth": SynthConfig, "train": TrainConfig,
            "detection": DetectionRunConfig, "detection.synth": UntrimmedConfig, "detection.train": DetectorConfig,
            "detection.detect": DetectConfig, "detection.rc3d": RC3DConfig, "detection.rc3d_detect": RC3DDetectConfig,
            "features": FeaturesConfig}


_TOML_SCALAR = st.one_of(st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                         st.text(max_size=12), st.sampled_from(["round", "mars", "flow", "layer4", "auto", "1/2",
                                                                "views:2x3", "cpu", "sgd", "plateau"]))
_TOML_VALUE = st.recursive(_TOML_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["mars", "rgb", "flow", "x"]), inner, max_size=3)),
    max_leaves=6)


@st.composite
def config_values(draw) -> tuple[str, dict[str, Any]]:
    """A stage's TOML table: mostly the dataclass's own keys (so values reach its checks), sometimes others."""
    stage = draw(st.sampled_from(sorted(config_classes())))
    names = [field.name for field in dataclasses.fields(config_classes()[stage])]
    keys = st.one_of(st.sampled_from(names), st.sampled_from([n.replace("_", "-") for n in names]), st.text(max_size=6))
    return stage, draw(st.dictionaries(keys, _TOML_VALUE, max_size=4))


def parse_config(case: tuple[str, dict[str, Any]]) -> None:
    from pipelines.core.config import build_config

    stage, values = case
    build_config(config_classes()[stage], values, source=Path("stage.toml"))


def parse_toml_text(text: str) -> None:
    from pipelines.core.config import load_config

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "x.toml")
        path.write_text(text)
        for stage, cls in config_classes().items():
            load_config(cls, path, table=stage)


_TOML_TEXT = st.lists(st.one_of(
    st.sampled_from(["[extract]", "[train]", "[fuse]", "[data]", "[synth]", "[train.flow]", "extract = 3",
                     "workers = -1", "workers = 2", 'preset = "nope"', "bound = nan", "bound = inf", "fps = 0",
                     "epochs = 1e400", 'shard = "3/2"', "classes = 3", "weights = {mars = -1}",
                     'weights = {mars = "x"}', "learn_weights = true", "jpeg_quality = 0", "top_k = 0",
                     "seed = -1", "short_side = 1.5", "crop_scales = [2.0]", "splits_to_run = [0]",
                     "frames = 1", "size = 4", "train_fraction = 1.0", "[import]", 'layout = "x"']),
    st.text(max_size=20)), max_size=6).map("\n".join)


# -- the --sta spec ------------------------------------------------------------------------------------------------
_STA_TOKEN = st.sampled_from(["layer4", "layer3", "default", "st", "ta", "sa", "se", "residual", "input",
                              "blocks=first", "blocks=all", "blocks=", "nodeconv", "deconv", "stride=2", "stride=0",
                              "stride=99999999999999999999", "reduction=4", "reduction=", "init=default",
                              "init=x", "", " ", "LAYER4", "layer-4", "²", "stride=²"])
_STA_TEXT = st.one_of(st.text(max_size=24), st.lists(st.lists(_STA_TOKEN, min_size=1, max_size=4).map(":".join),
                                                     max_size=3).map(",".join))


def parse_sta_text(text: str) -> None:
    from mars_sta import parse_sta

    spec = parse_sta(text)
    if spec is not None:  # the canonical form parses back to the same spec
        assert parse_sta(str(spec)) == spec


# -- score files ---------------------------------------------------------------------------------------------------
_ARRAYS = st.sampled_from([
    np.array(["Run/v1", "Walk/v2"]), np.array([0, 1]), np.array([1.5, 2.0], np.float32), np.zeros((2, 2), np.float32),
    np.zeros((2, 3)), np.array("test"), np.array(1), np.array(["a", "a"]), np.array([[1, 2]]), np.array([], "U1"),
    np.zeros((0, 2), np.float32), np.array([np.nan, np.inf]), np.array([-1, 7]), np.array(b"x"),
    np.array([True, False]), np.array(["Run", "Walk"]), np.array(3.5), np.array([1 + 2j]), np.zeros((2, 2), "m8[s]")])
_SCORE_KEYS = ("video_ids", "labels", "logits", "classes", "split", "subset", "stream", "protocol", "features")


_VALID_SCORES = {"video_ids": np.array(["Run/v1", "Walk/v2"]), "labels": np.array([0, 1]),
                 "logits": np.zeros((2, 2), np.float32), "classes": np.array(["Run", "Walk"]), "split": np.array(1),
                 "subset": np.array("test"), "stream": np.array("rgb"), "protocol": np.array("mars:16")}


def _zip_of_a_later_version() -> bytes:
    """A valid score file whose central directory says it needs zip version 25.5 to extract."""
    buffer = io.BytesIO()
    np.savez(buffer, **_VALID_SCORES)
    data = bytearray(buffer.getvalue())
    data[data.find(b"PK\x01\x02") + 6] = 0xFF
    return bytes(data)


@st.composite
def score_file(draw) -> bytes:
    """An .npz from arrays under the score keys, possibly truncated or with bytes flipped; or raw bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(st.binary(max_size=64), st.binary(max_size=16).map(lambda b: b"PK\x03\x04" + b),
                              st.binary(max_size=16).map(lambda b: b"\x93NUMPY" + b)))
    arrays = dict(_VALID_SCORES)
    for key in draw(st.lists(st.sampled_from(_SCORE_KEYS), unique=True, max_size=4)):
        if draw(st.booleans()):
            arrays[key] = draw(_ARRAYS)
        else:
            arrays.pop(key, None)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = bytearray(buffer.getvalue())
    damage = draw(st.sampled_from(["none", "cut", "flip"]))
    if damage == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "flip":
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(data)


def parse_score_file(content: bytes) -> None:
    from pipelines.scoring.scores import load_scores

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "scores.npz")
        path.write_bytes(content)
        load_scores(path)


# -- store manifests, failure lists and per-video attributes -------------------------------------------------------
_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
                     lambda inner: st.one_of(st.lists(inner, max_size=3),
                                             st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=8)


@st.composite
def manifest_document(draw) -> tuple[str, str]:
    """(manifest.json, failures.json) texts: near-valid documents with fields replaced, or arbitrary JSON/text."""
    manifest: Any = {"format": "mars-sta-flow-store", "format_version": 1, "source_root": "/videos",
                     "preprocessing": {"bound": 20.0, "quantization": "round", "short_side": 0}}
    for key in draw(st.lists(st.sampled_from(sorted(manifest)), max_size=2)):
        manifest[key] = draw(_JSON)
    if draw(st.integers(0, 4)) == 0:
        manifest = draw(_JSON)
    failures = draw(st.one_of(_JSON, st.lists(st.fixed_dictionaries(
        {"video_id": _JSON, "source": st.text(max_size=4), "reason": st.text(max_size=4)}), max_size=2)))
    text = draw(st.one_of(st.just(json.dumps(manifest)), st.text(max_size=20)))
    return text, json.dumps(failures)


def parse_manifest(documents: tuple[str, str]) -> None:
    from flow import store as layout
    from flow.verify import verify_store

    manifest, failures = documents
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, layout.MANIFEST).write_text(manifest)
        Path(folder, layout.FAILURES).write_text(failures)
        Path(folder, layout.VIDEOS).mkdir()
        layout.read_failures(folder)
        verify_store(folder)  # reports problems; raises only for a folder that is no store at all
        layout.read_manifest(folder)


_HDF5_TEXT = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))  # what an HDF5 string can hold
_ATTRIBUTE = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(), st.text(_HDF5_TEXT, max_size=8),
                       st.binary(min_size=1, max_size=4).map(np.void), st.sampled_from(["round", "jpeg", "png", ""]),
                       st.lists(st.integers(0, 9), min_size=1, max_size=3).map(np.array))
_VIDEO_ATTRS = ("fps", "native_fps", "height", "width", "bound", "quantization", "frame_encoding", "jpeg_quality",
                "source", "source_size", "source_mtime", "source_sha256")


_VALID_ATTRS: dict[str, Any] = {"fps": 25.0, "native_fps": 25.0, "height": 8, "width": 8, "bound": 20.0,
                                "quantization": "round", "frame_encoding": "jpeg", "jpeg_quality": 95,
                                "source": "Run/v1.avi", "source_size": 10, "source_mtime": 0.0}


@st.composite
def video_attributes(draw) -> dict[str, Any]:
    """A valid video's attributes with some replaced by other types and values, or deleted."""
    attrs = dict(_VALID_ATTRS)
    for key in draw(st.lists(st.sampled_from(_VIDEO_ATTRS), max_size=3)):
        value = draw(st.one_of(st.none(), _ATTRIBUTE))
        if value is None:
            attrs.pop(key, None)
        else:
            attrs[key] = value
    return attrs


def _video_file(path: Path, attrs: dict[str, Any]) -> None:
    import cv2

    ok, jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    with h5py.File(path, "w") as handle:
        frames = handle.create_dataset("frames", (3,), dtype=h5py.vlen_dtype(np.uint8))
        for k in range(3):
            frames[k] = jpeg.ravel()
        handle.create_dataset("flow", data=np.zeros((2, 8, 8, 2), np.uint8))
        handle.attrs.update(attrs)


def parse_video_attributes(attrs: dict[str, Any]) -> None:
    from flow import store as layout
    from flow.verify import verify_video

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "v.h5")
        _video_file(path, attrs)
        source = Path(folder, "v1.avi")
        source.write_bytes(b"0123456789")
        manifest = {"preprocessing": {"bound": 20.0, "quantization": "round", "short_side": 0}}
        verify_video(path, manifest)
        layout.source_change(path, source, compare_content=True)
        with h5py.File(path, "r") as handle:
            layout.check_video_file(handle, path)


# -- checkpoint payloads -------------------------------------------------------------------------------------------
def _tensors():
    return st.sampled_from([torch.zeros(2), torch.zeros(()), torch.zeros(4, 8), torch.zeros(16, 2, 3, 5, 5),
                            torch.zeros(3, dtype=torch.int64), torch.zeros(0), torch.zeros(16)])


_STATE_KEYS = st.one_of(st.sampled_from(["conv1.weight", "module.conv1.weight", "fc.weight", "fc.bias",
                                         "bn1.running_mean", "layer1.0.sta.gate", "module.", "", "x"]),
                        st.integers(0, 3), st.text(max_size=6))


@st.composite
def checkpoint_payload(draw) -> Any:
    """A checkpoint's dict: this project's keys, MARS's, a plain state_dict, with values of any plain kind."""
    tensors = _tensors()
    state = st.dictionaries(_STATE_KEYS, st.one_of(tensors, _JSON), max_size=4)
    payload_values = {
        "format": st.sampled_from(["mars-sta", "other", 1]), "format_version": st.one_of(_JSON, st.integers(-1, 3)),
        "arch": st.one_of(st.sampled_from(["tiny_resnet", "resnet-18", "resnet10", "nope"]), _JSON),
        "model_kwargs": st.one_of(_JSON, st.fixed_dictionaries({}, optional={
            "num_classes": st.integers(-1, 8), "in_channels": st.integers(-1, 3), "sample_size": st.integers(-1, 64),
            "sample_duration": st.integers(-1, 16), "shortcut": st.sampled_from(["A", "B", None, 3]),
            "sta": st.one_of(st.none(), _STA_TEXT)})),
        "state_dict": st.one_of(state, _JSON), "classes": _JSON, "stream": _JSON, "epoch": _JSON}
    kind = draw(st.sampled_from(["ours", "state", "json", "valid"]))
    if kind == "state":
        return draw(state)
    if kind == "json":
        return draw(_JSON)
    payload = dict(_tiny_checkpoint()) if kind == "valid" else {}
    for key in draw(st.lists(st.sampled_from(sorted(payload_values)), unique=True, max_size=3 if payload else 9)):
        if payload and draw(st.booleans()):
            payload.pop(key, None)
        else:
            payload[key] = draw(payload_values[key])
    return payload


def _tiny_model(in_channels: int = 2):
    from mars_sta import build_model

    if in_channels not in _TINY_MODELS:
        _TINY_MODELS[in_channels] = build_model("tiny_resnet", num_classes=4, in_channels=in_channels, sample_size=32,
                                                sample_duration=16)
    return _TINY_MODELS[in_channels]


def _tiny_checkpoint() -> dict[str, Any]:
    """A complete checkpoint of this project's format, as train writes it (without the resume state)."""
    model = _tiny_model()
    return {"format": "mars-sta", "format_version": 1, "arch": model.arch, "model_kwargs": dict(model.build_kwargs),
            "stream": "flow", "classes": ["a", "b", "c", "d"], "state_dict": model.state_dict()}


_TINY_MODELS: dict[int, Any] = {}


def parse_pretrained_payload(payload: Any) -> None:
    from mars_sta import load_pretrained

    model = _tiny_model()
    if payload == {}:  # the warm-up
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "c.pth")
        torch.save(payload, path)
        load_pretrained(model, path)


def parse_checkpoint_file(payload: Any) -> None:
    from pipelines.core.checkpoint import model_from_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "c.pth")
        torch.save(payload, path)
        model_from_checkpoint(path)


def _checkpoint_errors() -> tuple[type[BaseException], ...]:
    from mars_sta import CheckpointError

    return (CheckpointError,)


# -- detection results and annotations -----------------------------------------------------------------------------
_TRUTH_DATABASE = {  # the valid annotations the strategies start from: two test videos and a val one
    "v1": {"subset": "testing", "duration": 100.0, "annotations": [
        {"segment": [0, 10], "label": "jump"}, {"segment": [20, 30], "label": "jump"},
        {"segment": [60, 70], "label": "run"}, {"segment": [45, 55], "label": "Ambiguous"}]},
    "v2": {"subset": "testing", "duration": 50.0, "annotations": [{"segment": [0, 10], "label": "jump"}]},
    "v9": {"subset": "validation", "duration": 20.0, "annotations": [{"segment": [0, 5], "label": "jump"}]}}
_THUMOS_FILES = {"jump_test.txt": ("v1 0.0 10.0", "v1  20.0 30.0", "v2 0 10"), "run_test.txt": ("v1 60 70",),
                 "Ambiguous_test.txt": ("v1 45 55",), "jump_val.txt": ("v9 0 5",)}
_NUMBER = st.one_of(st.floats(), st.integers(), st.sampled_from([0, 10, 10**400, -10**400, 1e308, -1e308, 5e-324]))
_SECONDS = st.floats(0, 120).map(lambda seconds: f"{seconds:.1f}")
_NUMBER_TEXT = st.one_of(_SECONDS, _SECONDS, _NUMBER.map(str), st.sampled_from(
    ["nan", "inf", "-inf", "1e400", "3O", "1_000", "0x10", "", "+5", "\u0663", "10,5"]))
_VIDEO_ID = st.sampled_from(["v1", "v2", "v3", "v9", "v1.avi", "video_test_0009", "test/video_test_0003", "",
                             "a b", "\ufeff", "\u00e9"])
_LABEL = st.sampled_from(["jump", "run", "kick", "ghost", "Ambiguous", "", "a b"])
_THUMOS_VIDEO = _VIDEO_ID.filter(lambda video: len(video.split()) == 1)  # one field, as a valid line has
_THUMOS_ROW = st.tuples(_THUMOS_VIDEO, _NUMBER_TEXT, _NUMBER_TEXT).map(" ".join)
_THUMOS_LINE = st.integers(0, 5).flatmap(  # one line in six from the list-file grammar, or two fields
    lambda n: _THUMOS_ROW if n < 4 else _LINE if n == 4 else st.tuples(_THUMOS_VIDEO, _NUMBER_TEXT).map(" ".join))


@st.composite
def json_bytes(draw, document: Any, key: str) -> bytes:
    """``document`` as JSON, now and then with an entry of its ``key`` table given twice, cut short, with a byte
    changed (which makes invalid UTF-8 as well as invalid JSON) or an unpaired surrogate escape in a string.

    Here and below the first value of each draw is the common case: Hypothesis starts from first values."""
    table = document.get(key) if isinstance(document, dict) else None
    if isinstance(table, dict) and table and draw(st.integers(0, 5)) == 5:
        first = draw(st.sampled_from(sorted(table)))
        entries = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in [*table.items(), (first, table[first])]]
        text = "{" + json.dumps(key) + ": {" + ", ".join(entries) + "}}"
    else:
        text = json.dumps(document)
    data = bytearray(text.encode())
    damage = draw(st.sampled_from(["none"] * 7 + ["cut", "flip", "surrogate"]))
    if damage == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "flip" and data:
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    elif damage == "surrogate" and b'"' in data:
        quote = draw(st.sampled_from([i for i, byte in enumerate(data) if byte == ord('"')]))
        data[quote + 1:quote + 1] = b"\\ud800"
    return bytes(data)


_DETECTION = st.fixed_dictionaries({"label": _LABEL, "score": st.floats(0, 1),
                                    "segment": st.tuples(st.floats(0, 120), st.floats(0, 120)).map(sorted)})
_DETECTION_FIELD = {"label": st.one_of(_LABEL, _JSON), "score": st.one_of(_NUMBER, _JSON),
                    "segment": st.one_of(st.lists(_NUMBER, max_size=3), _JSON)}


@st.composite
def results_file(draw) -> bytes:
    """An ActivityNet results file: well-formed detections of known and unknown videos and labels, with now and
    then a field replaced (other numbers, types) or deleted, a video's list replaced; or any JSON."""
    results = draw(st.dictionaries(_VIDEO_ID, st.lists(_DETECTION, max_size=4), max_size=4))
    detections = [item for found in results.values() for item in found]
    for _ in range(draw(st.integers(0, 2)) if detections else 0):
        item, key = draw(st.sampled_from(detections)), draw(st.sampled_from(sorted(_DETECTION_FIELD)))
        if draw(st.integers(0, 4)) == 4:
            item.pop(key, None)
        else:
            item[key] = draw(_DETECTION_FIELD[key])
    if results and draw(st.integers(0, 9)) == 9:
        results[draw(st.sampled_from(sorted(results)))] = draw(_JSON)
    document = draw(st.sampled_from([{"version": "VERSION 1.3", "results": results}, {"results": results}]))
    if draw(st.integers(0, 9)) == 9:
        document = draw(st.one_of(_JSON, st.fixed_dictionaries({"results": _JSON})))
    return draw(json_bytes(document, "results"))


_ANNOTATION = st.fixed_dictionaries({}, optional={"segment": st.one_of(st.lists(_NUMBER, max_size=3), _JSON),
                                                  "label": st.one_of(_LABEL, _JSON)})
_ENTRY_VALUES = {"subset": st.one_of(st.sampled_from(["testing", "validation", "test", "Testing"]), _JSON),
                 "duration": st.one_of(st.floats(0, 200), _NUMBER, _JSON),
                 "annotations": st.one_of(st.lists(st.one_of(_ANNOTATION, _JSON), max_size=3), _JSON)}
_VIDEO_ENTRY = st.one_of(st.fixed_dictionaries(_ENTRY_VALUES), st.fixed_dictionaries({}, optional=_ENTRY_VALUES))
_TAXONOMY = st.one_of(_JSON, st.lists(st.fixed_dictionaries({}, optional={
    "nodeName": st.one_of(_LABEL, _JSON), "parentName": st.one_of(st.sampled_from(["Root", "jump", None]), _JSON)}),
    max_size=4))


@st.composite
def annotation_json(draw) -> bytes:
    """An ActivityNet-style annotation file: the valid one with videos deleted, replaced or added, an annotation
    changed, a taxonomy; or any JSON."""
    database = json.loads(json.dumps(_TRUTH_DATABASE))
    for video in draw(st.lists(_VIDEO_ID, max_size=3)):
        action = draw(st.sampled_from(["delete", "replace", "annotation"]))
        if action == "delete":
            database.pop(video, None)
        elif action == "replace" or video not in database:
            database[video] = draw(_VIDEO_ENTRY)
        elif isinstance(database[video].get("annotations"), list):
            database[video]["annotations"].append(draw(_ANNOTATION))
    document: Any = {"version": "1.3", "database": database}
    if draw(st.integers(0, 4)) == 4:
        document["taxonomy"] = draw(_TAXONOMY)
    if draw(st.integers(0, 9)) == 9:
        document = draw(st.one_of(_JSON, st.fixed_dictionaries({"database": _JSON})))
    return draw(json_bytes(document, "database"))


@st.composite
def thumos_folder(draw) -> dict[str, bytes]:
    """A THUMOS'14 annotation folder: its files with lines inserted, replaced or deleted, files left out or added
    (other classes, subsets, names), sometimes a ``detclasslist.txt``."""
    extra = draw(st.lists(st.sampled_from(["kick_test.txt", "swim_val.txt", "Ambiguous_val.txt", "jump_testing.txt",
                                           "_test.txt", "jump_test.txt.bak", "a b_test.txt"]), max_size=2))
    files = {name: draw(text_file(_THUMOS_LINE, _THUMOS_FILES.get(name, ())))
             for name in [*_THUMOS_FILES, *extra] if draw(st.integers(0, 9)) < 9}
    if draw(st.booleans()):
        entry = st.tuples(st.integers(-1, 4), _LABEL).map(lambda pair: f"{pair[0]} {pair[1]}")
        files["detclasslist.txt"] = draw(text_file(st.integers(0, 3).flatmap(lambda n: _LINE if n == 3 else entry),
                                                   ("1 jump", "2 run", "3 kick")))
    return files


def fixed_truths() -> list[Any]:
    """The valid annotations in both formats, read once: what results files are checked against."""
    from pipelines.data.annotations import read_annotations

    if not _TRUTHS:
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "gt.json").write_text(json.dumps({"database": _TRUTH_DATABASE}))
            Path(folder, "gt").mkdir()
            for name, lines in _THUMOS_FILES.items():
                Path(folder, "gt", name).write_text("\n".join(lines))
            _TRUTHS.extend([read_annotations(Path(folder, "gt.json")), read_annotations(Path(folder, "gt"))])
    return _TRUTHS


_TRUTHS: list[Any] = []


def _fixed_predictions() -> dict[str, Any]:
    """Detections of every case the evaluation tells apart: hits, duplicates, misses, Ambiguous, unknown videos."""
    from pipelines.scoring.detection_map import Predictions

    jump, run = Predictions(), Predictions()
    for video, start, end, score in [("v1", 0, 10, .9), ("v1", 0, 10, .8), ("v3", 0, 10, .7), ("v2", 0, 5, .6)]:
        jump.add(video, start, end, score)
    for video, start, end, score in [("v1", 40, 50, .7), ("v1", 60, 70, .5), ("v1", 80, 90, .5)]:
        run.add(video, start, end, score)
    return {"jump": jump, "run": run}


def _evaluate_every_way(predictions: dict[str, Any], truth: Any) -> None:
    """Both protocols, with numpy's warnings as errors, and the table as the CLI prints it (UTF-8)."""
    import warnings

    from pipelines.scoring.detection_map import evaluate_detections, format_table

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for protocol in ("activitynet", "thumos14"):
            result = evaluate_detections(predictions, truth, (0.1, 0.5, 1.0), protocol)
            assert all(0 <= ap <= 1 for aps in result.per_class.values() for ap in aps), result.per_class
            format_table(result).encode("utf-8")


def parse_results_file(content: bytes) -> None:
    from pipelines.scoring.detection_map import check_result_videos, read_results

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "results.json")
        path.write_bytes(content)
        videos, predictions = read_results(path)
        for truth in fixed_truths():
            _evaluate_every_way(predictions, truth)
        for truth in fixed_truths():
            check_result_videos(path, videos, truth)


def _parse_annotations(path: Path) -> None:
    from pipelines.data.annotations import read_annotations

    truth = read_annotations(path, "test")
    truth.subset_videos(["v1", "v3", "video_test_0009", "video_val_0001"])
    _evaluate_every_way(_fixed_predictions(), truth)


def parse_thumos_folder(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for name, content in files.items():
            Path(folder, name).write_bytes(content)
        _parse_annotations(Path(folder))


def parse_annotation_json(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "gt.json").write_bytes(content)
        _parse_annotations(Path(folder, "gt.json"))


# -- the table -----------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Parser:
    name: str
    strategy: Any
    parse: Callable[[Any], None]
    allowed: Callable[[], tuple[type[BaseException], ...]] = lambda: (InputError,)


PARSERS = [
    Parser("split files", split_folder(), parse_split_folder),
    Parser("config tables", config_values(), parse_config),
    Parser("config TOML text", _TOML_TEXT, parse_toml_text),
    Parser("--sta spec", _STA_TEXT, parse_sta_text, lambda: (ValueError,)),
    Parser("score files", score_file(), parse_score_file),
    Parser("store manifests", manifest_document(), parse_manifest),
    Parser("video attributes", video_attributes(), parse_video_attributes),
    Parser("pretrained payloads", checkpoint_payload(), parse_pretrained_payload, _checkpoint_errors),
    Parser("checkpoint files", checkpoint_payload(), parse_checkpoint_file),
    Parser("detection results", results_file(), parse_results_file),
    Parser("thumos annotation folders", thumos_folder(), parse_thumos_folder),
    Parser("activitynet annotation files", annotation_json(), parse_annotation_json),
]
BY_NAME = {parser.name: parser for parser in PARSERS}


def _property(name: str) -> Callable[[Any], None]:
    parser = BY_NAME[name]
    return lambda value: check_one_line(parser.parse, value, parser.allowed())


# One test per parser, so that each keeps its own failing examples (found by Hypothesis, kept as regressions).
@SETTINGS
@given(split_folder())
def test_split_files(files):
    _property("split files")(files)


@SETTINGS
@given(config_values())
@example(("data", {"\r": []}))  # a TOML key holding a line break: the message must stay one line
@example(("synth", {"frames": -1}))  # refused by the dataclass itself: one line naming the file
def test_config_tables(case):
    _property("config tables")(case)


@SETTINGS
@given(_TOML_TEXT)
def test_config_toml_text(text):
    _property("config TOML text")(text)


@SETTINGS
@given(_STA_TEXT)
def test_sta_spec(text):
    _property("--sta spec")(text)


@SETTINGS
@given(score_file())
@example(_zip_of_a_later_version())  # zipfile raises NotImplementedError
def test_score_files(content):
    _property("score files")(content)


@SETTINGS
@given(manifest_document())
@example(('{"format": "mars-sta-flow-store", "format_version": 1}', "[]"))  # no preprocessing, no source_root
def test_store_manifests(documents):
    _property("store manifests")(documents)


@SETTINGS
@given(video_attributes())
@example({**_VALID_ATTRS, "height": ""})  # an attribute of another type
@example({**_VALID_ATTRS, "frame_encoding": np.array([1, 2])})  # an array where a string belongs
@example({**_VALID_ATTRS, "source_size": np.void(b"x")})  # opaque bytes
def test_video_attributes(attrs):
    _property("video attributes")(attrs)


@SETTINGS
@given(checkpoint_payload())
@example({0: torch.zeros(2)})  # a key that is no parameter name
def test_pretrained_payloads(payload):
    _property("pretrained payloads")(payload)


@SETTINGS
@given(checkpoint_payload())
@example({"arch": "tiny_resnet", "format": "mars-sta", "format_version": None})
@example({**_tiny_checkpoint(), "state_dict": {0: torch.zeros(2)}})  # a key that is no parameter name
@example({**_tiny_checkpoint(), "classes": None})  # a field of the wrong kind
@example({**_tiny_checkpoint(), "epoch": "3"})
def test_checkpoint_files(payload):
    _property("checkpoint files")(payload)


@DETECTION_SETTINGS
@given(results_file())
@example(b'{"results": {"v1": [{"label": "jump", "score": 0.5, "segment": [10, 0]}]}}')  # reversed
@example(b'{"results": {"v1": [{"label": "jump", "score": NaN, "segment": [0, 10]}]}}')
@example(b'{"results": {"v1": [{"label": "jump", "score": 1e999, "segment": [0, 10]}]}}')  # infinite
@example(b'{"results": {"v1": [{"label": "jump", "score": 1, "segment": [0, 1' + b"0" * 400 + b']}]}}')
@example(b'{"results": {"v1": [{"label": "jump", "score": ' + b"1" * 5000 + b', "segment": [0, 1]}]}}')  # too long
@example(b'{"results": {"v1": [], "v1": []}}')  # a video twice
@example(b'{"results": {"v1.avi": []}}')  # no video of the subset
@example(b'{"results": {"v1": [{"label": "jump", "score": 1, "segment": [-1e308, 1e308]}]}}')  # longest segment
@example(b'{"results": {"v1": [{"label": "\\ud800", "score": 1, "segment": [0, 1]}]}}')  # no character
def test_detection_results(content):
    _property("detection results")(content)


@DETECTION_SETTINGS
@given(thumos_folder())
@example({"jump_test.txt": b"v1 0 10\nv\xe91 0 10\n"})  # not UTF-8
def test_thumos_annotation_folders(files):
    _property("thumos annotation folders")(files)


@DETECTION_SETTINGS
@given(annotation_json())
@example(b'{"database": {"v1": {"annotations": []}}}')  # no subset
@example(b'{"database": {"v1": {"subset": "testing", "duration": 1' + b"0" * 400 + b', "annotations": []}}}')
@example(b'{"database": {"v1": {"subset": "testing", "annotations": 3}}}')  # annotations not a list
@example(b'{"database": {"v1": {"subset": "testing", "annotations": [{"segment": [0, 1], "label": "\\ud800"}]}}}')
@example(b'{"database": {"v\xff": {}}}')  # not UTF-8
def test_activitynet_annotation_files(content):
    _property("activitynet annotation files")(content)


def test_every_parser_has_a_test():
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert {p.name.replace("--", "").replace(" ", "_").replace("TOML", "toml") for p in PARSERS} <= tested
