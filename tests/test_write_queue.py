"""Writing each input's outputs all or none, in a background thread, with errors reported per input."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from xray2mri.pipeline.atomic import atomic_file, atomic_folder
from xray2mri.pipeline.serving.write_queue import BackgroundWriter, write_all_or_none


def _file_job(path: Path, text: str = "x"):
    def job() -> Path:
        with atomic_file(path) as tmp:
            tmp.write_text(text)
        return path

    return job


def _folder_job(path: Path):
    def job() -> Path:
        with atomic_folder(path) as tmp:
            (tmp / "MR000001.dcm").write_text("slice")
        return path

    return job


def _failing_job(message: str = "No space left on device"):
    def job() -> Path:
        raise OSError(28, message)

    return job


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_failed_output_removes_the_input_s_others(tmp_path):
    """A file and a folder already written are removed when a later output of the same input fails."""
    with pytest.raises(OSError, match="No space left"):
        write_all_or_none([_file_job(tmp_path / "a.nii.gz"), _folder_job(tmp_path / "a_series"), _failing_job()])
    assert _listing(tmp_path) == []
    assert write_all_or_none([_file_job(tmp_path / "b.nii.gz"), _file_job(tmp_path / "b.png")]) == [
        tmp_path / "b.nii.gz", tmp_path / "b.png"]


def test_background_writer_reports_each_input_in_order_and_keeps_the_good_ones(tmp_path):
    main = threading.current_thread()
    threads = []

    def recording_job(path):
        inner = _file_job(path)

        def job():
            threads.append(threading.current_thread())
            return inner()

        return job

    with BackgroundWriter(depth=1) as writer:
        results = []
        for name in ("one", "two", "three", "four"):
            jobs = [recording_job(tmp_path / f"{name}.nii.gz"), _file_job(tmp_path / f"{name}.png")]
            if name == "two":
                jobs.append(_failing_job())
            writer.submit(name, jobs)
            results += writer.finished()
        results += writer.close()
    assert [r.key for r in results] == ["one", "two", "three", "four"]
    assert [r.error is None for r in results] == [True, False, True, True]
    assert "No space left" in str(results[1].error) and results[1].outputs == []
    assert results[0].outputs == [tmp_path / "one.nii.gz", tmp_path / "one.png"]
    assert _listing(tmp_path) == sorted(f"{n}.{e}" for n in ("one", "three", "four") for e in ("nii.gz", "png"))
    assert threads and all(t is not main for t in threads)  # written off the caller's thread
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit("five", [])


def test_leaving_on_an_error_finishes_the_input_in_progress_and_drops_the_waiting(tmp_path):
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(10)
        return _file_job(tmp_path / "first.png")()

    with pytest.raises(KeyboardInterrupt):
        with BackgroundWriter(depth=1) as writer:
            writer.submit("first", [slow])
            started.wait(10)
            writer.submit("second", [_file_job(tmp_path / "second.png")])  # waits in the queue
            threading.Timer(0.2, release.set).start()
            raise KeyboardInterrupt
    assert _listing(tmp_path) == ["first.png"]  # the one in progress completed; the waiting one was dropped
