"""--output: checked before anything runs, then written whole, as a plain write would leave it."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from rich.table import Table

from normcheck.cli._common import STDOUT, check_output, emit
from normcheck.errors import UsageError

REPORT = "a report\nin two lines\n"
ROOT = os.geteuid() == 0  # os.access grants root everything


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_dev_null_stays_a_character_device(tmp_path):
    emit(REPORT, Path(os.devnull))
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert check_output(Path(os.devnull)) == Path(os.devnull)


def test_a_fifo_gets_the_text_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    emit(REPORT, check_output(fifo))
    reader.join(timeout=10)
    assert received == [REPORT.encode()]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_symlink_stays_a_link_and_its_target_gets_the_report(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    emit(REPORT, check_output(link))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == REPORT
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_dangling_symlink_creates_its_target(tmp_path, umask_022):
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "new.txt")
    emit(REPORT, check_output(link))
    assert link.is_symlink() and (tmp_path / "new.txt").read_text() == REPORT


def test_a_new_file_gets_the_umask_mode(tmp_path, umask_022):
    out = tmp_path / "report.txt"
    emit(REPORT, check_output(out))
    assert out.read_text() == REPORT
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["report.txt"]  # no temporary file left


def test_an_existing_file_keeps_its_mode(tmp_path, umask_022):
    out = tmp_path / "report.txt"
    out.write_text("old and longer than the new report, which replaces all of it")
    out.chmod(0o600)
    emit(REPORT, out)
    assert out.read_text() == REPORT
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    out.chmod(0o664)
    emit(REPORT, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o664


def test_a_rich_table_is_written_as_plain_text(tmp_path):
    table = Table("col")
    table.add_row("value")
    out = tmp_path / "table.txt"
    emit(table, out)
    assert "value" in out.read_text() and "\x1b" not in out.read_text()


def test_dash_is_stdout_and_creates_no_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    output = check_output(Path("-"))
    assert output == STDOUT
    emit(REPORT, output)
    emit(REPORT, None)
    assert capsys.readouterr().out == REPORT * 2
    assert list(tmp_path.iterdir()) == []


def test_none_stays_none():
    assert check_output(None) is None


def test_a_relative_path_is_resolved_when_checked(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    output = check_output(Path("report.txt"))
    assert output == tmp_path / "run" / "report.txt"
    monkeypatch.chdir(tmp_path / "elsewhere")  # a case may change directory
    emit(REPORT, output)
    assert (tmp_path / "run" / "report.txt").read_text() == REPORT
    assert list((tmp_path / "elsewhere").iterdir()) == []


def usage_error(*args, **kwargs) -> str:
    with pytest.raises(UsageError) as info:
        check_output(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_directory_is_refused(tmp_path):
    assert usage_error(tmp_path) == f"--output {tmp_path} is a directory; name a file"
    link = tmp_path / "dirlink"
    link.symlink_to(tmp_path)
    assert "is a directory" in usage_error(link)


def test_a_missing_folder_is_refused(tmp_path):
    out = tmp_path / "missing" / "r.json"
    assert usage_error(out) == f"--output {out}: folder {tmp_path / 'missing'} does not exist"
    (tmp_path / "file").write_text("")
    assert "is not a folder" in usage_error(tmp_path / "file" / "r.json")


def test_the_same_file_as_the_plot_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "--output and --plot name the same file" in usage_error(Path("b.svg"), plot=Path("b.svg"))
    assert "same file" in usage_error(tmp_path / "b.svg", plot=Path("./b.svg"))
    (tmp_path / "real.svg").write_text("")
    (tmp_path / "link.svg").symlink_to(tmp_path / "real.svg")
    assert "same file" in usage_error(Path("link.svg"), plot=tmp_path / "real.svg")
    os.link(tmp_path / "real.svg", tmp_path / "hard.svg")
    assert "same file" in usage_error(Path("hard.svg"), plot=Path("real.svg"))
    assert check_output(Path("report.md"), plot=Path("b.svg")) == tmp_path / "report.md"


def test_the_option_is_named(tmp_path):
    assert usage_error(tmp_path, option="--plot").startswith("--plot ")


@pytest.mark.skipif(ROOT, reason="root may write anywhere")
def test_unwritable_folder_and_file_are_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "old.txt").write_text("")
    folder.chmod(0o555)
    try:
        assert "is not writable" in usage_error(folder / "new.txt")
        assert "is not writable" in usage_error(folder / "old.txt")
    finally:
        folder.chmod(0o755)
    locked = tmp_path / "locked.txt"
    locked.write_text("")
    locked.chmod(0o444)
    assert f"{locked} is not writable" in usage_error(locked)


def test_write_errors_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match=r"^cannot write .*missing.*: No such file or directory$"):
        emit(REPORT, tmp_path / "missing" / "r.txt")
    with pytest.raises(UsageError, match=r"cannot write .*: it is a directory"):
        emit(REPORT, tmp_path)


def test_unwritable_paths_are_refused_as_os_access_reports_them(tmp_path, monkeypatch):
    import normcheck.cli.output as output

    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "old.txt").write_text("")
    denied: set[Path] = set()
    monkeypatch.setattr(output.os, "access", lambda p, mode: Path(p) not in denied)
    denied.add(folder)
    assert usage_error(folder / "new.txt") == f"--output {folder / 'new.txt'}: folder {folder} is not writable"
    assert "folder" in usage_error(folder / "old.txt")  # replacing it needs the folder too
    denied.clear()
    denied.add(folder / "old.txt")
    assert usage_error(folder / "old.txt") == f"--output {folder / 'old.txt'}: {folder / 'old.txt'} is not writable"
    assert check_output(Path(os.devnull)) == Path(os.devnull)  # a device needs only itself writable
