"""``aiotlspool demo --store``: the cached pool keeps its sessions in a FileSessionCache or a
RedisSessionCache (a real redis-server), a new process then resumes on its first connection
through the same store, and every unusable ``--store`` is one line with exit code 2 (3 for a
Redis that does not answer).

The CLI runs in-process (``main(argv)`` returns the exit code), as in ``test_cli.py``.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiotlspool.cli.demo_store import SECRET_ENV, parse_store, redact
from aiotlspool.cli.main import EXIT_CONNECT, EXIT_OK, EXIT_USAGE, main

from ..support.redisserver import RedisServer
from ..support.servers import unused_port
from ..support.stores import redis_for_stores
from .test_cli import assert_one_line_error, table_rows


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with redis_for_stores() as server:
        yield server


def flat(text: str) -> str:
    """rich wraps long lines at the terminal width: compare with single spaces."""
    return " ".join(text.split())


def run_demo(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["demo", "--connections", "6", *args])
    out = capsys.readouterr()
    assert code == EXIT_OK, out.err
    return out.out


def test_file_store_a_new_process_resumes_on_its_first_connection(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = secrets.token_bytes(32)
    monkeypatch.setenv(SECRET_ENV, secret.hex())
    directory = tmp_path / "sessions"
    out = run_demo(capsys, "--store", f"file:{directory}")
    rows = table_rows(out)
    assert rows["full handshakes"][:2] == ["6", "1"]  # without cache, with the file store
    assert rows["resumed handshakes"][:2] == ["0", "5"]
    text = flat(out)
    assert f"FileSessionCache in {directory} (the secret from ${SECRET_ENV})" in text
    assert "with file store" in text
    assert re.search(r"a new process \(pid \d+\) with a new FileSessionCache: its first "
                     r"connection resumed", text), text  # fmt: skip
    # The entries are in the directory (private to the user); the secret is not.
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    entries = list(directory.rglob("*.entry"))
    assert entries, list(directory.rglob("*"))
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in entries)
    for path in directory.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret not in data and secret.hex().encode() not in data, path


def test_redis_store_sessions_appear_in_redis_and_a_new_process_resumes(
    capsys: pytest.CaptureFixture[str], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    monkeypatch.delenv(SECRET_ENV, raising=False)
    out = run_demo(capsys, "--tls", "1.2", "--store", redis_server.url)
    rows = table_rows(out)
    assert rows["full handshakes"][:2] == ["6", "1"]
    assert rows["resumed handshakes"][:2] == ["0", "5"]
    text = flat(out)
    # A throwaway secret: a namespace of the run's own.
    found = re.search(r"namespace '(aiotlspool-demo-[0-9a-f]{8})' \(a throwaway secret", text)
    assert found, text
    assert "1 session(s) under 1 key(s) in Redis after the run" in text
    assert re.search(r"a new process \(pid \d+\) with a Redis client of its own: its first "
                     r"connection resumed", text), text  # fmt: skip
    client = redis.Redis.from_url(redis_server.url)
    try:
        pattern = "{" + found.group(1) + "}:*"
        keys = [k for k in client.scan_iter(match=pattern) if not k.endswith(b":lru")]
        assert keys and all(client.llen(k) >= 1 for k in keys)
    finally:
        client.close()


def test_unreachable_redis_is_one_line_and_exit_code_3(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("redis")
    url = f"redis://user:hunter2@127.0.0.1:{unused_port()}/0"
    line = assert_one_line_error(capsys, main(["demo", "--store", url]), EXIT_CONNECT)
    assert "cannot reach Redis" in line
    assert "hunter2" not in line and "user:***@" in line


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ("sessions", "expected file:DIR, redis://HOST[:PORT][/DB] or rediss://"),
        ("http://127.0.0.1/", "expected file:DIR"),
        ("file:", "needs a directory"),
        ("redis://", "the URL names no host"),
        ("redis://127.0.0.1:99999/0", "invalid URL"),
    ],
)
def test_bad_store_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], store: str, message: str
) -> None:
    line = assert_one_line_error(capsys, main(["demo", "--store", store]), EXIT_USAGE)
    assert message in line


def test_unsafe_directory_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    line = assert_one_line_error(capsys, main(["demo", "--store", f"file:{directory}"]), EXIT_USAGE)
    assert "group or others" in line
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    line = assert_one_line_error(
        capsys, main(["demo", "--store", f"file:{not_a_directory}"]), EXIT_USAGE
    )
    assert "not a directory" in line


@pytest.mark.parametrize(
    ("secret", "message"),
    [("not hex", "must be hex digits"), ("ab" * 16, "at least 32 bytes (64 hex digits), got 16")],
)
def test_bad_secret_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    secret: str,
    message: str,
) -> None:
    monkeypatch.setenv(SECRET_ENV, secret)
    args = ["demo", "--store", f"file:{tmp_path / 's'}"]
    line = assert_one_line_error(capsys, main(args), EXIT_USAGE)
    assert message in line


def test_store_needs_the_native_engine(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = ["demo", "--engine", "stdlib", "--store", f"file:{tmp_path / 's'}"]
    line = assert_one_line_error(capsys, main(args), EXIT_USAGE)
    assert "native session engine" in line


def test_redis_without_redis_py_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "redis" or m.startswith("redis.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)
    line = assert_one_line_error(
        capsys, main(["demo", "--store", "redis://127.0.0.1:6379/0"]), EXIT_USAGE
    )
    assert "pip install 'aiotlspool[redis]'" in line


def test_parse_store_keeps_passwords_out_of_labels() -> None:
    spec = parse_store("rediss://app:s3cret@redis.internal:6380/2", environ={})
    assert spec.kind == "redis" and spec.throwaway and len(spec.secret) == 32
    assert spec.label == "rediss://app:***@redis.internal:6380/2"
    assert spec.namespace.startswith("aiotlspool-demo-")  # a throwaway secret: its own
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    kept = parse_store("file:~/s", environ={SECRET_ENV: "00" * 32})
    assert kept.location == os.path.expanduser("~/s") and not kept.throwaway
    assert kept.secret == bytes(32)
