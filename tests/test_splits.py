"""Split readers: official UCF-101 / HMDB-51 files, mmaction2 lists, the CSV format, and the validation subset."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from flow.errors import InputError
from pipelines.data.splits import load_split, val_subset

UCF_CLASSES = ["ApplyEyeMakeup", "Biking", "YoYo"]


def write(path: Path, text: str, bom: bool = False, crlf: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def ucf_folder(root: Path, train: str | None = None, test: str | None = None) -> Path:
    """Official UCF-101 files, written the way the downloads are: CRLF, trailing spaces, a BOM on one file."""
    write(root / "classInd.txt", "".join(f"{i} {c}\n" for i, c in enumerate(UCF_CLASSES, 1)), bom=True, crlf=True)
    if train is None:
        train = (
            "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1 \n"
            "Biking/v_Biking_g08_c01.avi 2\n\n"
            "YoYo/v_YoYo_g08_c01.avi 3\n"
            "YoYo/v_YoYo_g09_c01.avi 3\n"
        )
    if test is None:
        test = "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\nBiking/v_Biking_g01_c01.avi  \nYoYo/v_YoYo_g01_c01.avi\n"
    write(root / "trainlist01.txt", train, crlf=True)
    write(root / "testlist01.txt", test)
    return root


def test_ucf_official_files(tmp_path):
    split = load_split(ucf_folder(tmp_path), 1)
    assert split.classes == UCF_CLASSES
    assert split.train == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", 0),
        ("Biking/v_Biking_g08_c01", 1),
        ("YoYo/v_YoYo_g08_c01", 2),
        ("YoYo/v_YoYo_g09_c01", 2),
    ]
    assert split.test == [("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01", 0), ("Biking/v_Biking_g01_c01", 1),
                          ("YoYo/v_YoYo_g01_c01", 2)]
    assert split.number == 1 and split.subset("test") is split.test


def test_ucf_trainlist_without_labels_takes_the_class_folder(tmp_path):
    split = load_split(ucf_folder(tmp_path, train="YoYo/v_YoYo_g08_c01.avi\nBiking/v_Biking_g08_c01.avi\n"), 1)
    assert split.train == [("YoYo/v_YoYo_g08_c01", 2), ("Biking/v_Biking_g08_c01", 1)]


def hmdb_folder(root: Path) -> Path:
    """Three classes (written in non-alphabetical order), three splits, HMDB's trailing-space lines."""
    videos = {"wave": ["w1", "w2", "w3"], "brush_hair": ["b1", "b2", "b3"], "clap": ["c1", "c2", "c3"]}
    for name, vids in videos.items():
        for number in (1, 2, 3):
            flags = [1, 2, 0] if number == 1 else [2, 1, 1]
            lines = "".join(f"{v}.avi {f} \n" for v, f in zip(vids, flags))
            write(root / f"{name}_test_split{number}.txt", lines, crlf=number == 2)
    return root


def test_hmdb_official_files(tmp_path):
    folder = hmdb_folder(tmp_path)
    split = load_split(folder, 1)
    assert split.classes == ["brush_hair", "clap", "wave"]
    assert sorted(split.train) == [("brush_hair/b1", 0), ("clap/c1", 1), ("wave/w1", 2)]
    assert sorted(split.test) == [("brush_hair/b2", 0), ("clap/c2", 1), ("wave/w2", 2)]
    split2 = load_split(folder, 2)
    assert sorted(split2.train) == [("brush_hair/b2", 0), ("brush_hair/b3", 0), ("clap/c2", 1), ("clap/c3", 1),
                                    ("wave/w2", 2), ("wave/w3", 2)]


def test_mmaction_lists_with_and_without_frame_counts(tmp_path):
    write(tmp_path / "ucf101_train_split_1_rawframes.txt",
          "Biking/v_Biking_g08_c01 120 1\nApply/v_Apply_g08_c01 90 0\n")
    write(tmp_path / "ucf101_val_split_1_rawframes.txt", "Apply/v_Apply_g01_c01.avi 0\nBiking/v_Biking_g01_c01.avi 1\n")
    split = load_split(tmp_path, 1)
    assert split.classes == ["Apply", "Biking"]
    assert split.train == [("Biking/v_Biking_g08_c01", 1), ("Apply/v_Apply_g08_c01", 0)]
    assert split.test == [("Apply/v_Apply_g01_c01", 0), ("Biking/v_Biking_g01_c01", 1)]


def test_csv_split_file(tmp_path):
    csv_file = write(
        tmp_path / "split.csv",
        "video,subset,split\n"
        "walk/a.mp4,train,1\nwalk/b.mp4,test,1\nrun/c.mp4,train,1\nrun/d.mp4,test,1\n"
        "walk/a.mp4,test,2\nwalk/b.mp4,train,2\nrun/c.mp4,test,2\nrun/d.mp4,train,2\n",
        bom=True,
        crlf=True,
    )
    split = load_split(csv_file, 2)
    assert split.classes == ["run", "walk"]
    assert split.train == [("walk/b", 1), ("run/d", 0)]
    assert split.test == [("walk/a", 1), ("run/c", 0)]


def test_csv_class_column_for_a_flat_layout(tmp_path):
    csv_file = write(tmp_path / "flat.csv", "video,class,subset\nclip1.avi,jump,train\nclip2.avi,sit,test\n")
    split = load_split(csv_file, 1)
    assert split.classes == ["jump", "sit"] and split.train == [("clip1", 0)] and split.test == [("clip2", 1)]


UCF_ERRORS = [
    ("train", "Biking/v_Biking_g08_c01.avi 2 extra\n", "trainlist01.txt: line 1: expected"),
    ("train", "Rowing/v_Rowing_g08_c01.avi\n", "line 1: unknown class 'Rowing'"),
    ("train", "Biking/v_Biking_g08_c01.avi 7\n", "line 1: label 7 out of range 1..3"),
    ("train", "Biking/v_Biking_g08_c01.avi 2\nBiking/v_Biking_g09_c01.avi 3\n",
     "line 2: label 3 disagrees with class folder 'Biking'"),
    ("train", "Biking/v_Biking_g08_c01.avi x\n", "line 1: label 'x' is not an integer"),
    ("train", "Biking/a.avi\nYoYo/b.avi\nBiking/a.avi\n", "line 3: duplicate video 'Biking/a'"),
    ("test", "YoYo/v_YoYo_g01_c01.avi\nYoYo/v_YoYo_g08_c01.avi\n",
     "testlist01.txt: line 2: video 'YoYo/v_YoYo_g08_c01' is in both train"),
    ("train", "/data/Biking/v_Biking_g08_c01.avi\n", "line 1: absolute path"),
    ("train", "Biking/../../etc/passwd\n", "line 1: path 'Biking/../../etc/passwd' leaves the dataset root"),
    ("train", "v_Biking_g08_c01.avi 2\n", "line 1: expected <class>/<video>"),
    ("train", "\r\n  \n", "trainlist01.txt: empty split file"),
]


@pytest.mark.parametrize("which, text, message", UCF_ERRORS)
def test_ucf_errors_name_the_file_and_line(tmp_path, which, text, message):
    folder = ucf_folder(tmp_path, **{which: text})
    with pytest.raises(InputError) as caught:
        load_split(folder, 1)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_ucf_missing_split_number_and_bad_class_index(tmp_path):
    folder = ucf_folder(tmp_path)
    with pytest.raises(InputError, match="trainlist02.txt: missing split file"):
        load_split(folder, 2)
    write(folder / "classInd.txt", "1 A\n3 B\n")
    with pytest.raises(InputError, match=r"classInd.txt: class indices must run 1..2; missing \[2\]"):
        load_split(folder, 1)


def test_hmdb_errors(tmp_path):
    folder = hmdb_folder(tmp_path)
    write(folder / "clap_test_split1.txt", "c1.avi 1\nc2.avi 3\n")
    with pytest.raises(InputError, match=r"clap_test_split1.txt: line 2: flag '3' must be 0"):
        load_split(folder, 1)
    write(folder / "clap_test_split1.txt", "c1.avi\n")
    with pytest.raises(InputError, match=r"clap_test_split1.txt: line 1: expected '<video>.avi <flag>'"):
        load_split(folder, 1)
    (folder / "clap_test_split1.txt").unlink()
    with pytest.raises(InputError, match="clap_test_split1.txt: missing split file"):
        load_split(folder, 1)


def test_mmaction_label_must_match_the_class_folder(tmp_path):
    write(tmp_path / "x_train_split_1_videos.txt", "A/a.mp4 0\nB/b.mp4 1\nB/c.mp4 0\n")
    write(tmp_path / "x_val_split_1_videos.txt", "A/d.mp4 0\n")
    message = r"x_train_split_1_videos.txt: line 3: label 0 disagrees with class folder 'B'"
    with pytest.raises(InputError, match=message):
        load_split(tmp_path, 1)


CSV_ERRORS = [
    ("video,subset,sbuset\n", "line 1: unknown column 'sbuset'"),
    ("video,class\n", "line 1: missing column 'subset'"),
    ("video,subset\nwalk/a.avi,train\nwalk/b.avi,val\n", "line 3: subset 'val' must be 'train' or 'test'"),
    ("video,subset\nwalk/a.avi,train\nwalk/a.avi,test\n", "line 3: video 'walk/a' is in both train"),
    ("video,subset,class\nwalk/a.avi,train,run\n", "line 2: class 'run' disagrees with class folder 'walk'"),
    ("video,subset\na.avi,train\n", "line 2: video 'a' has no class folder and no class column"),
    ("video,subset,split\nwalk/a.avi,train,1\n", "no rows for split 2 (splits in file: 1)"),
    ("video,subset\nwalk/a.avi\n", "line 2: 1 fields, header has 2"),
    ("video,subset\n../walk/a.avi,train\n", "line 2: path '../walk/a.avi' leaves the dataset root"),
]


@pytest.mark.parametrize("text, message", CSV_ERRORS)
def test_csv_errors(tmp_path, text, message):
    csv_file = write(tmp_path / "split.csv", text)
    with pytest.raises(InputError) as caught:
        load_split(csv_file, 2 if "split 2" in message else 1)
    assert str(caught.value).startswith(f"{csv_file}: ") and message in str(caught.value)


def test_paths_that_are_not_split_sources(tmp_path):
    with pytest.raises(InputError, match="no such split file or folder"):
        load_split(tmp_path / "nowhere", 1)
    with pytest.raises(InputError, match="no split files found"):
        load_split(tmp_path, 1)
    with pytest.raises(InputError, match="expected a folder of split files or a .csv split file"):
        load_split(write(tmp_path / "list.txt", "a/b.avi 1\n"), 1)


def labelled(counts: dict[int, int]) -> list[tuple[str, int]]:
    return [(f"c{label}/v{i:03d}", label) for label, count in counts.items() for i in range(count)]


def test_val_subset_is_stratified_seeded_and_order_free():
    train = labelled({0: 40, 1: 20, 2: 10, 3: 2, 4: 1})
    rest, val = val_subset(train, 0.1, seed=3)
    assert Counter(label for _, label in val) == {0: 4, 1: 2, 2: 1, 3: 1}
    assert sorted(rest + val) == sorted(train) and not set(rest) & set(val)
    assert rest == [item for item in train if item not in val]  # list order kept
    assert val_subset(list(reversed(train)), 0.1, seed=3)[1] == list(reversed(val))
    assert val_subset(train, 0.1, seed=4)[1] != val


def test_val_subset_fraction_zero_and_bounds():
    train = labelled({0: 5, 1: 5})
    assert val_subset(train, 0.0) == (train, [])
    rest, val = val_subset(train, 0.9)
    assert Counter(label for _, label in rest) == {0: 1, 1: 1}
    with pytest.raises(ValueError):
        val_subset(train, 1.0)


def _ucf_style_train_list(classes: int = 4, groups: int = 7, clips: int = 4) -> list[tuple[str, int]]:
    return [(f"C{label}/v_C{label}_g{group:02d}_c{clip:02d}", label)
            for label in range(classes) for group in range(1, groups + 1) for clip in range(1, clips + 1)]


def test_ucf101_validation_holds_out_whole_groups_per_class():
    from pipelines.data.splits import hold_out_validation, video_group

    train = _ucf_style_train_list()
    held = hold_out_validation(train, 0.2, seed=5)
    assert held.method == "groups"
    train_groups = {(label, video_group(video)) for video, label in held.train}
    val_groups = {(label, video_group(video)) for video, label in held.val}
    assert val_groups and not train_groups & val_groups
    assert {label for _, label in held.val} == {label for _, label in held.train} == set(range(4))
    assert 0.1 < len(held.val) / len(train) < 0.35
    assert sorted(hold_out_validation(list(reversed(train)), 0.2, seed=5).val) == sorted(held.val)
    assert hold_out_validation(train, 0.2, seed=6).val != held.val


def test_validation_without_groups_falls_back_to_class_stratification():
    from pipelines.data.splits import hold_out_validation

    train = [(f"c{label}/clip_{i:03d}", label) for label in range(3) for i in range(10)]
    held = hold_out_validation(train, 0.1, seed=1)
    assert held.method == "class-stratified"
    assert (held.train, held.val) == val_subset(train, 0.1, seed=1)
    mixed = _ucf_style_train_list(classes=2) + [("C9/other_name", 1)]
    assert hold_out_validation(mixed, 0.1).method == "class-stratified"
    assert hold_out_validation(train, 0.0).method == "none"


def test_a_ucf_style_list_with_fewer_videos_per_class_than_folds_falls_back():
    from pipelines.data.splits import hold_out_validation

    train = [(f"C{label}/v_C{label}_g01_c01", label) for label in range(20)]  # one video in each of 20 classes
    held = hold_out_validation(train, 0.1, seed=0)
    assert held.method == "class-stratified"
    assert (held.train, held.val) == val_subset(train, 0.1, seed=0)
