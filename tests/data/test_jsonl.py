"""JSON and JSON Lines reading: line numbers as an editor shows them, one clear error per fault."""

from __future__ import annotations

import pytest

from uniroute.data.jsonl import iter_jsonl_objects, read_json_file
from uniroute.data.representative import RepresentativePrompt, read_representative_prompts
from uniroute.errors import DataError


def test_objects_come_with_their_line_numbers_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"b": [2, 3]}\r\n{"c": "\\u00e9t\\u00e9"}')
    assert list(iter_jsonl_objects(path)) == [(1, {"a": 1}), (4, {"b": [2, 3]}), (5, {"c": "été"})]


def test_an_empty_file_yields_nothing(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    assert list(iter_jsonl_objects(path)) == []


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        ("{not json", r"rows.jsonl, line 3: not valid JSON \(Expecting property name"),
        ("[1, 2]", r"rows.jsonl, line 3: expected a JSON object, got list"),
        ('"text"', r"rows.jsonl, line 3: expected a JSON object, got str"),
        ("null", r"rows.jsonl, line 3: expected a JSON object, got NoneType"),
    ],
)
def test_a_bad_line_is_named(tmp_path, second_line: str, message: str):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"ok": true}\n\n' + second_line + "\n")
    with pytest.raises(DataError, match=message):
        list(iter_jsonl_objects(path))


def test_bytes_that_are_not_utf8_are_named_by_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    # Enough good lines that the bad byte lies well past the reader's first decoded chunk.
    good = b'{"text": "plain ascii"}\n' * 1000
    path.write_bytes(good + '{"text": "café"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.jsonl, line 1001: not UTF-8 text"):
        list(iter_jsonl_objects(path))


def test_lines_before_a_bad_one_are_yielded_first(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}\noops\n')
    objects = iter_jsonl_objects(path)
    assert next(objects) == (1, {"n": 1})
    assert next(objects) == (2, {"n": 2})
    with pytest.raises(DataError, match="line 3: not valid JSON"):
        next(objects)


def test_representative_prompts_are_read_through_it(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        '{"prompt_id": "p1", "text": "2+2?", "task": "math", "reference": "4"}\n'
        "\n"
        '{"prompt_id": 7, "text": "Capital of France?", "task": "geo"}\n'
    )
    assert read_representative_prompts(path) == [
        RepresentativePrompt("p1", "2+2?", "math", "4"),
        RepresentativePrompt("7", "Capital of France?", "geo", None),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt_id": "p1", "task": "math"}', r"line 2: bad representative prompt \(no 'text'"),
        ("{broken", r"line 2: not valid JSON"),
        ('["p1", "2+2?", "math"]', r"line 2: expected a JSON object, got list"),
    ],
)
def test_a_bad_representative_prompt_is_named_by_line(tmp_path, line: str, message: str):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt_id": "p0", "text": "hi", "task": "chat"}\n' + line + "\n")
    with pytest.raises(DataError, match=r"prompts.jsonl, " + message):
        read_representative_prompts(path)


def test_a_json_file_is_read_whole(tmp_path):
    path = tmp_path / "doc.json"
    path.write_text('[{"a": 1},\n {"b": null}]')
    assert read_json_file(path) == [{"a": 1}, {"b": None}]


def test_a_bad_json_file_names_the_line_and_column(tmp_path):
    path = tmp_path / "doc.json"
    path.write_text('{"a": 1,\n "b": }')
    with pytest.raises(DataError, match=r"doc.json: not valid JSON \(line 2, column 7: Expecting"):
        read_json_file(path)
    path.write_bytes('{"caf\u00e9": 1}'.encode("latin-1"))
    with pytest.raises(DataError, match=r"doc.json: not UTF-8 text \('utf-8' codec can't decode"):
        read_json_file(path)
