"""Capped, rotating container logs (issue 12, hole 8): option parsing as Docker's json-file driver, the
writer never exceeding max-size nor keeping more than max-file files, readers always in order."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from minirun.errors import ConfigError
from minirun.runtime import logfile


def test_defaults_cap_the_log():
    options = logfile.parse_options([])
    assert (options.max_bytes, options.max_files) == (10 << 20, 3)
    assert options.as_record() == {"max-size": "10m", "max-file": "3"}


@pytest.mark.parametrize(
    ("given", "size", "files"),
    [
        (["max-size=1m", "max-file=2"], 1 << 20, 2),
        (["max-size=10k,max-file=5"], 10 << 10, 5),
        (["max-size=2g"], 2 << 30, 3),
        (["max-size=4k"], 4 << 10, 3),
        (["max-size=1.5m"], 3 << 19, 3),
        (["max-size=64KiB"], 64 << 10, 3),
    ],
)
def test_sizes_and_counts(given, size, files):
    options = logfile.parse_options(given)
    assert (options.max_bytes, options.max_files) == (size, files)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["max-size=abc"], 'invalid --log-opt max-size "abc"'),
        (["max-size=0"], "must be positive"),
        (["max-size=512"], "the least is 4k"),
        (["max-size=-1"], 'invalid --log-opt max-size "-1"'),
        (["max-file=2"], "max-file needs max-size"),
        (["max-size=1m", "max-file=0"], 'invalid --log-opt max-file "0"'),
        (["max-size=1m", "max-file=x"], 'invalid --log-opt max-file "x"'),
        (["compress=true"], 'unknown log opt "compress"'),
        (["max-size"], 'invalid --log-opt "max-size"'),
    ],
)
def test_bad_options_are_refused_with_one_line(given, message):
    with pytest.raises(ConfigError) as caught:
        logfile.parse_options(given)
    assert message in caught.value.msg and caught.value.code == 125
    assert "\n" not in str(caught.value)


def test_writer_rotates_and_keeps_at_most_max_file_files(tmp_path: Path):
    path = str(tmp_path / "c.log")
    options = logfile.LogOptions("1k", "3", 1 << 10, 3)  # below the CLI's least max-size: the mechanics alone
    writer = logfile.RotatingWriter(path, options)
    lines = b"".join(b"line %d\n" % i for i in range(2000))
    for start in range(0, len(lines), 700):  # writes that straddle the size boundary
        writer.write(lines[start : start + 700])
    writer.close()
    files = sorted(os.listdir(tmp_path))
    assert files == ["c.log", "c.log.1", "c.log.2"]
    assert all(os.path.getsize(tmp_path / name) <= 1024 for name in files)
    kept = logfile.read(path, options)
    assert len(kept) > 2048 and lines.endswith(kept)  # the newest bytes, exactly, in order
    assert logfile.read(path, options, tail=2) == b"line 1998\nline 1999\n"


def test_max_file_one_keeps_only_the_newest(tmp_path: Path):
    path = str(tmp_path / "c.log")
    options = logfile.LogOptions("100", "1", 100, 1)  # below the CLI's least max-size: the mechanics alone
    writer = logfile.RotatingWriter(path, options)
    writer.write(b"x" * 250)
    writer.close()
    assert os.listdir(tmp_path) == ["c.log"] and os.path.getsize(path) == 50


def test_follow_reads_across_rotations_in_order(tmp_path: Path):
    path = str(tmp_path / "c.log")
    options = logfile.parse_options(["max-size=4k", "max-file=16"])  # slack for a slow follower
    writer = logfile.RotatingWriter(path, options)
    writer.write(b"first\n")
    done = threading.Event()
    expected = b"first\n" + b"".join(b"%d\n" % i for i in range(20000))

    def produce() -> None:
        for start in range(0, 20000, 500):
            writer.write(b"".join(b"%d\n" % i for i in range(start, start + 500)))
            threading.Event().wait(0.01)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    seen = b"".join(logfile.follow(path, options, None, done.is_set))
    producer.join()
    writer.close()
    assert seen == expected


def test_a_write_that_fails_is_dropped_not_raised(tmp_path: Path):
    path = str(tmp_path / "gone" / "c.log")  # its directory was removed (the container was)
    writer = logfile.RotatingWriter(path, logfile.parse_options([]))
    writer.write(b"lost\n")
    assert writer.failed


def test_a_relay_starting_late_does_not_recreate_a_removed_log(tmp_path: Path):
    path = tmp_path / "c.log"  # the container was removed (and its log) before the relay opened it
    writer = logfile.RotatingWriter(str(path), logfile.parse_options([]), create=False)
    writer.write(b"lost\n")
    assert writer.failed and not path.exists()


def test_a_huge_write_rotates_at_most_max_file_times(tmp_path: Path):
    """Review of hole 8: every rotation renames each kept file, in the supervisor's loop; a 64 KiB write to a
    tiny log rotated once per kilobyte. Files a write would rotate out again are skipped: the same files
    are left, after at most max_file rotations."""
    path = str(tmp_path / "c.log")
    options = logfile.LogOptions("1k", "3", 1 << 10, 3)
    writer = logfile.RotatingWriter(path, options)
    rotations = []
    original = writer.rotate
    writer.rotate = lambda: (rotations.append(1), original())[1]
    data = b"".join(b"%07d\n" % i for i in range(8192))  # 64 KiB
    writer.write(b"head\n")
    writer.write(data)
    writer.close()
    assert len(rotations) <= 3
    assert sorted(os.listdir(tmp_path)) == ["c.log", "c.log.1", "c.log.2"]
    kept = logfile.read(path, options)
    # Block by block: 1019 bytes fill the first file, then 63 full files and 5 bytes; the last three stay.
    assert len(kept) == 2 * 1024 + 5 and data.endswith(kept)
