import json

from temporal_executor.worker.truncation import truncate_text, truncate_value


def test_small_text_and_values_pass_unchanged() -> None:
    assert truncate_text("hello", 100) == ("hello", False)
    assert truncate_value({"a": [1, 2]}, 100) == ({"a": [1, 2]}, False)


def test_large_text_is_cut_to_the_limit_with_a_note() -> None:
    text, truncated = truncate_text("é" * 5000, 2000)
    assert truncated
    assert len(text.encode("utf-8")) <= 2000
    assert text.endswith("bytes exceeded the 2000-byte limit]")
    assert "10000 bytes" in text  # the note says how large the original was


def test_large_value_becomes_truncated_json_text() -> None:
    value = {"rows": list(range(5000))}
    kept, truncated = truncate_value(value, 1024)
    assert truncated
    assert isinstance(kept, str)
    assert kept.startswith(json.dumps(value)[:100])
    assert len(kept.encode("utf-8")) <= 1024
