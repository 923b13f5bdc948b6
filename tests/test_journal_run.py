"""``llmfleet run`` in this process (its subprocess runs are in test_journal_crash.py): the line
format, per-line errors, output order, the report and exit codes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from llmfleet._cli import main
from llmfleet.emulator import EmulatorConfig, start_emulator
from llmfleet.journal._run import Line, journal_path_for, read_requests, scan_requests

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from llmfleet.emulator import Emulator

MODEL = "claude-haiku-4-5"


@pytest.fixture
def emu() -> Iterator[Emulator]:
    emulator = start_emulator(EmulatorConfig(turnaround_s=0.2))
    try:
        yield emulator
    finally:
        emulator.close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")


def params(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": text}]} | (
        extra
    )


def line(custom_id: object, p: object) -> str:
    return json.dumps({"custom_id": custom_id, "params": p})


def run(tmp: Path, emu: Emulator, *extra: str) -> int:
    return main(
        [
            "run",
            str(tmp / "in.jsonl"),
            "-o",
            str(tmp / "out.jsonl"),
            "--base-url",
            emu.url,
            "--window",
            "0.05",
            "--poll",
            "0.05",
            "--no-progress",
            *extra,
        ]
    )


def test_lines_are_parsed_with_a_clear_error_each(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        "\n".join(
            [
                line("a", params("x")),
                "",
                "{oops",
                "[1, 2]",
                line("", params("x")),
                line("a", params("y")),
                line("b", "not params"),
                line("c", params("x", latency_budget_ms=5)),
                json.dumps({"custom_id": "d", "params": {}, "extra": 1}),
            ]
        )
    )
    lines = list(read_requests(path))
    assert lines[0] == Line(1, "a", params("x"))
    errors = [(entry.number, entry.error) for entry in lines[1:]]
    assert [n for n, _ in errors] == [3, 4, 5, 6, 7, 8, 9]
    messages = [e or "" for _, e in errors]
    assert "not JSON" in messages[0]
    assert "not a JSON object" in messages[1]
    assert '"custom_id" must be a string' in messages[2]
    assert "duplicate custom_id: line 1" in messages[3]
    assert '"params" must be a JSON object' in messages[4]
    assert "latency_budget_ms in params" in messages[5]
    assert "unknown field(s) extra" in messages[6]


def test_a_scan_counts_the_lines_and_finds_each_duplicate_before_the_run_reads(
    tmp_path: Path,
) -> None:
    """``scan_requests`` counts the request lines and names each line whose custom_id an
    earlier line has (with that line), as the reader would judge it; a reader given its
    findings judges alike with no table of its own, and a reader given none (the writer's
    second pass, of lines already judged) takes every line as it is."""
    path = tmp_path / "in.jsonl"
    path.write_text(
        "\n".join(
            [
                line("a", params("x")),
                "",
                "{oops",
                line("b", "not params"),  # a bad line's id still counts as seen
                line("a", params("y")),
                line("b", params("z")),
                json.dumps({"custom_id": 7, "params": params("x")}),
                line("c", params("x")),
            ]
        )
        + "\n"
    )
    total, duplicates = scan_requests(path)
    assert total == 7
    assert duplicates == {5: 1, 6: 4}
    judged = list(read_requests(path))
    assert list(read_requests(path, duplicates=duplicates)) == judged
    assert [x.error for x in judged if x.error and "duplicate" in x.error] == [
        "duplicate custom_id: line 1 has it already",
        "duplicate custom_id: line 4 has it already",
    ]
    again = list(read_requests(path, duplicates={}))
    assert again[3] == Line(5, "a", params("y"))


def test_run_writes_every_line_in_input_order(
    tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in.jsonl").write_text(
        "\n".join(
            [
                line("first", params("one")),
                "not json",
                line("second", params("two", stream=True)),
                line("third", params("three [[errored]]")),
                line("fourth", params("four")),
            ]
        )
        + "\n"
    )
    assert run(tmp_path, emu, "--batch-size", "2") == 1  # not every line succeeded
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(o["custom_id"], o["line"], o["status"]) for o in out] == [
        ("first", 1, "succeeded"),
        (None, 2, "invalid"),
        ("second", 3, "invalid"),
        ("third", 4, "errored"),
        ("fourth", 5, "succeeded"),
    ]
    assert out[0]["response"]["content"][0]["text"] == "one"
    assert "stream=True" in out[2]["error"]["message"]
    assert out[3]["error"]["type"] == "api_error"
    assert not (tmp_path / "out.jsonl.part").exists()
    assert journal_path_for(tmp_path / "out.jsonl").exists()
    report = capsys.readouterr().out
    assert "5 lines" in report
    assert "2 succeeded" in report
    assert "2 invalid" in report
    assert "1 errored" in report
    assert "cost at batch price: $" in report

    # Rerun: the answered lines (succeeded and errored) come from the journal.
    creates = emu.counts.get("batch_create", 0)
    assert run(tmp_path, emu) == 1
    assert emu.counts.get("batch_create", 0) == creates
    assert "answered from the journal (no request): 3" in capsys.readouterr().out


def test_a_line_waiting_for_its_batch_reads_its_id_from_its_key(
    tmp_path: Path, emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held line keeps its custom_id only until its call holds the line's journal key,
    which names it: the id read back from the key is the line's own, whatever it holds
    (colons, the key's own words, non-ASCII), in both the succeeded and the errored lines."""
    from llmfleet.journal import _run

    ids = ["a:b", "run:x:y", "key:run:z", "é ✓", "-" * 64]
    for custom_id in ids:
        jkey = "key:" + _run.run_key(custom_id, params("x"))
        assert _run._custom_id_in(jkey) == custom_id
    kept: list[str | None] = []
    queued = _run._Held.queued

    def spy(self: _run._Held) -> None:
        queued(self)
        kept.append(self._custom_id)

    monkeypatch.setattr(_run._Held, "queued", spy)
    texts = ["one", "two [[errored]]", "three", "four", "five"]
    (tmp_path / "in.jsonl").write_text(
        "\n".join(line(c, params(t)) for c, t in zip(ids, texts, strict=True)) + "\n"
    )
    assert run(tmp_path, emu) == 1  # one errored
    assert kept == [None] * len(ids)
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["custom_id"] for o in out] == ids
    assert [o["status"] for o in out] == ["succeeded", "errored", *["succeeded"] * 3]


def test_the_longest_custom_id_runs_and_a_longer_one_is_an_invalid_line(
    tmp_path: Path, emu: Emulator
) -> None:
    """A line's key names its custom_id and must fit the journal's longest key: the longest
    id allowed runs; one character more is that line's ``invalid``, and the rest runs (a
    256-character id, allowed before, stopped the whole run with the key's ValueError)."""
    from llmfleet.journal._run import MAX_CUSTOM_ID

    ids = ["x" * MAX_CUSTOM_ID, "y" * (MAX_CUSTOM_ID + 1), "z" * 256, "ok"]
    (tmp_path / "in.jsonl").write_text(
        "\n".join(line(custom_id, params(str(i))) for i, custom_id in enumerate(ids)) + "\n"
    )
    assert run(tmp_path, emu) == 1  # not every line succeeded
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["status"] for o in out] == ["succeeded", "invalid", "invalid", "succeeded"]
    assert out[0]["custom_id"] == ids[0]
    assert f"1 to {MAX_CUSTOM_ID} characters" in out[1]["error"]["message"]


def test_an_edited_line_is_a_new_call(tmp_path: Path, emu: Emulator) -> None:
    (tmp_path / "in.jsonl").write_text(line("a", params("before")) + "\n")
    assert run(tmp_path, emu) == 0
    (tmp_path / "in.jsonl").write_text(line("a", params("after")) + "\n")
    assert run(tmp_path, emu) == 0
    (out,) = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out["response"]["content"][0]["text"] == "after"
    assert emu.counts["batch_create"] == 2


def test_a_foreign_journal_stops_the_run_with_what_to_do(
    tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in.jsonl").write_text(line("a", params("x")) + "\n")
    journal = tmp_path / "mine.db"
    journal.write_text("my notes\n")
    assert run(tmp_path, emu, "--journal", str(journal)) == 2
    err = capsys.readouterr().err
    assert "not an llmfleet journal" in err
    assert "move" in err
    assert sum(emu.counts.values()) == 0
    assert journal.read_text() == "my notes\n"
    assert not (tmp_path / "out.jsonl").exists()


def test_usage_errors(
    tmp_path: Path,
    emu: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(tmp_path, emu) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "in.jsonl").write_text(line("a", params("x")) + "\n")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    assert run(tmp_path, emu) == 2
    assert "ANTHROPIC_API_KEY" in capsys.readouterr().err
    assert main(["run", "--help"]) == 0
    assert "custom_id" in capsys.readouterr().out
