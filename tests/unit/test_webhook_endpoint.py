"""The docs' local webhook endpoint answers each delivery with the status its answer file holds at that moment."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.localhost.webhook_endpoint import BROKEN_ANSWER, read_answer


def test_no_answer_file_means_accept(tmp_path: Path) -> None:
    assert read_answer(None) == 200
    assert read_answer(tmp_path / "answer") == 200
    (tmp_path / "answer").write_text("\n")
    assert read_answer(tmp_path / "answer") == 200


def test_the_answer_file_is_read_at_each_delivery(tmp_path: Path) -> None:
    answer = tmp_path / "answer"
    answer.write_text("400\n")
    assert read_answer(answer) == 400
    answer.write_text("200\n")
    assert read_answer(answer) == 200


@pytest.mark.parametrize("text", ["refuse", "99", "600", "-400"])
def test_an_answer_that_is_no_http_status_fails_the_delivery_and_says_so(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = tmp_path / "answer"
    answer.write_text(text)
    assert read_answer(answer) == BROKEN_ANSWER
    assert "not an HTTP status" in capsys.readouterr().err
