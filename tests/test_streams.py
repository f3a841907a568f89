"""Stream names as values: every registered stream, with and without STA, reads back as the string it writes."""
from __future__ import annotations

import pytest

from flow.errors import InputError
from pipelines.core.config import TRAIN_STREAMS
from pipelines.core.stream_specs import STREAM_SPECS, StreamName
from pipelines.core.streams import FUSION_ORDER


@pytest.mark.parametrize("name", StreamName.every(), ids=str)
def test_a_stream_name_reads_back_as_itself(name):
    text = str(name)
    assert text == (f"sta-{name.base}" if name.sta else name.base)
    assert StreamName.parse(text) == name
    assert name.spec is STREAM_SPECS[name.base]


def test_the_names_are_the_ones_files_and_reports_use():
    names = [str(name) for name in StreamName.every()]
    assert names == ["flow", "sta-flow", "rgb", "sta-rgb", "mars", "sta-mars"]
    assert set(names) == set(FUSION_ORDER) == set(TRAIN_STREAMS)


def test_only_mars_streams_have_a_teacher_and_it_is_the_flow_stream():
    assert {str(name): name.has_teacher for name in StreamName.every()} == {
        "flow": False, "sta-flow": False, "rgb": False, "sta-rgb": False, "mars": True, "sta-mars": True}
    assert StreamName.parse("sta-mars").teacher == StreamName.parse("mars").teacher == StreamName("flow")
    assert StreamName("rgb").teacher is None


@pytest.mark.parametrize("text", ["depth", "sta-depth", "sta-", "", "STA-mars", "sta-sta-mars", "mars "])
def test_an_unknown_stream_name_is_refused(text):
    with pytest.raises(InputError, match=r"stream '.*': expected one of flow, rgb, mars \(with 'sta-' in front"):
        StreamName.parse(text)
