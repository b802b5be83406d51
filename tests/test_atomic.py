import json
import os
import stat

import pytest

from prefalign.atomic import atomic_write, write_json_atomic, write_jsonl_atomic, write_text_atomic


def test_text_and_json_round_trip(tmp_path):
    path = write_text_atomic(tmp_path / "deep" / "a.txt", "héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    write_json_atomic(tmp_path / "b.json", {"x": 1.5})
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": 1.5}
    write_jsonl_atomic(tmp_path / "c.jsonl", [{"a": 1}, {"a": 2}])
    assert [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()] == [{"a": 1}, {"a": 2}]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    write_json_atomic(path, {"old": True})

    def half_then_crash(temporary: str) -> None:
        with open(temporary, "w") as handle:
            handle.write('{"new": ')
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        atomic_write(path, half_then_crash)
    assert json.loads(path.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_unserialisable_json_leaves_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"ok": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}


def test_written_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "p.txt", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
