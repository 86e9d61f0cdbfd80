"""What an encode run means is checked once, when the request is built, with no database."""

import re

import pytest

from vectorize_core.errors import BadInput
from vectorize_core.request import EncodeRequest


def test_one_column_given_as_a_string_is_a_tuple_of_one():
    request = EncodeRequest(table="passage", column="passage", prefix_columns=["lang"], shard=[1, 2])
    assert request.column == ("passage",)
    assert request.prefix_columns == ("lang",)
    assert request.shard == (1, 2)
    assert hash(request)  # a request can key a cache


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"column": ()}, "at least one --column"),
        ({"column": ("a", "a")}, "repeats a column"),
        ({"adopt": True, "reencode": True}, "choose one"),
        ({"on_error": "ignore"}, "'stop' or 'skip'"),
        ({"index": "later"}, "'after', 'now' or 'skip'"),
        ({"shard": (0, 4)}, "1-based"),
        ({"shard": (5, 4)}, "1-based"),
        ({"max_idle": 3.0}, "--max-idle goes with --follow"),
        ({"batch_size": 0}, "--batch-size must be at least 1"),
        ({"chunk_tokens": 4}, "--chunk-tokens must be at least 8"),
        ({"chunk_overlap": -1}, "--chunk-overlap must be at least 0"),
    ],
)
def test_a_request_that_cannot_run_says_why_when_built(options, says):
    with pytest.raises(BadInput, match=re.escape(says)):
        EncodeRequest(**{"table": "passage", "column": ("passage",), **options})


def test_an_option_that_does_not_exist_is_named():
    with pytest.raises(BadInput, match="no option 'colum'"):
        EncodeRequest.of(table="passage", colum="passage")


def test_encode_takes_a_request_or_its_options_not_both():
    from vectorize_core import encode

    request = EncodeRequest(table="passage", column="passage")
    with pytest.raises(BadInput, match="not both"):
        encode(None, request, chunk=True)
    with pytest.raises(BadInput, match="no option 'chunks'"):
        encode(None, table="passage", column="passage", chunks=True)
