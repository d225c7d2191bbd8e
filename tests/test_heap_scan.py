"""The global-heap signature is found wherever it lies, however the bytes are cut into blocks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bilstm_cli.formats.h5heaps import CollectionFinder


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.sampled_from([b"G", b"C", b"O", b"L", b"x", b"GCOL"]), max_size=80).map(
        b"".join
    ),
    block=st.integers(min_value=1, max_value=17),
)
def test_every_occurrence_found_once(data, block):
    finder = CollectionFinder()
    for i in range(0, len(data), block):
        finder.feed(data[i : i + block])
    expected = [i for i in range(len(data)) if data[i : i + 4] == b"GCOL"]
    assert sorted(finder.found) == expected
