"""Downloads into the cache folder, served by a local HTTP server on 127.0.0.1: no test touches the internet."""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ardm.data import DataError, download, fetch, load_dataset, parse_spec, write_cifar10_archive
from ardm.data.download import SOURCES, Source, cache_dir, source_url
from ardm.data.text import decode_text
from ardm.progress import PlainProgress


class _Server:
    """A local HTTP server: `files` maps a path ("/x.tar.gz") to its bytes; `requests` lists the paths asked for.

    A path in `short` is answered with a Content-Length one byte longer than what is sent (a dropped connection).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.short: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + (self.path in server.short)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    served = _Server()
    yield served
    served.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """ARDM_CACHE set to an empty folder (not created: fetch creates it); no mirror or URL override."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("ARDM_CACHE", str(folder))
    monkeypatch.delenv("ARDM_MIRROR", raising=False)
    monkeypatch.delenv("ARDM_CIFAR10_URL", raising=False)
    return folder


@pytest.fixture
def archive(tmp_path):
    """(bytes, md5, train, test) of a small archive in the official layout."""
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
    test = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    path = tmp_path / "built" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    md5 = write_cifar10_archive(path, train, test)
    return path.read_bytes(), md5, train, test


def _files(folder: Path) -> list[str]:
    """Every name in `folder`, hidden temporaries included ([] if the folder does not exist)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_cache_folder_and_sources(monkeypatch, tmp_path):
    monkeypatch.delenv("ARDM_CACHE", raising=False)
    monkeypatch.delenv("ARDM_MIRROR", raising=False)
    monkeypatch.delenv("ARDM_CIFAR10_URL", raising=False)
    assert cache_dir() == Path.home() / ".cache" / "ardm"
    monkeypatch.setenv("ARDM_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    official = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert SOURCES["cifar10"] == Source(official, "c58f30108f718f92721af3b95e74349a", "cifar-10-python.tar.gz")
    assert source_url("cifar10") == official
    monkeypatch.setenv("ARDM_MIRROR", "http://mirror.example/data/")
    assert source_url("cifar10") == "http://mirror.example/data/cifar-10-python.tar.gz"
    monkeypatch.setenv("ARDM_CIFAR10_URL", "http://other.example/c.tgz")  # the per-dataset URL wins
    assert source_url("cifar10") == "http://other.example/c.tgz"


def test_cifar10_without_path_downloads_once_into_the_cache(server, cache, archive, monkeypatch, capsys):
    body, md5, train, test = archive
    server.files["/cifar-10-python.tar.gz"] = body
    url = f"{server.base}/cifar-10-python.tar.gz"
    monkeypatch.setitem(SOURCES, "cifar10", Source(url, md5, "cifar-10-python.tar.gz"))
    np.testing.assert_array_equal(load_dataset("cifar10", "test").images, test)
    assert "download cifar-10-python.tar.gz" in capsys.readouterr().err  # the progress bar names the file
    assert _files(cache) == ["cifar-10-python.tar.gz"]
    assert (cache / "cifar-10-python.tar.gz").read_bytes() == body
    np.testing.assert_array_equal(load_dataset("cifar10", "train").images, train)
    np.testing.assert_array_equal(load_dataset("cifar10", "test").images, test)
    assert server.requests == ["/cifar-10-python.tar.gz"]  # later loads read the cached copy
    assert str(parse_spec("cifar10")) == "cifar10"


def test_mirror_env_and_md5_option(server, cache, archive, monkeypatch):
    """A user behind a mirror: ARDM_MIRROR serves the official file names; ?md5= names another archive's hash."""
    body, md5, _, test = archive
    server.files["/mirror/cifar-10-python.tar.gz"] = body
    monkeypatch.setenv("ARDM_MIRROR", f"{server.base}/mirror")
    # The official md5 is still expected by default, so this archive is refused ...
    with pytest.raises(DataError, match=r"md5 mismatch \(expected c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10", "test")
    assert _files(cache) == []
    # ... and accepted when the spec names its hash.
    np.testing.assert_array_equal(load_dataset(f"cifar10?md5={md5}", "test").images, test)
    monkeypatch.setenv("ARDM_CIFAR10_URL", f"{server.base}/elsewhere.tgz")  # not requested: the cache has it
    np.testing.assert_array_equal(load_dataset(f"cifar10?md5={md5}", "test").images, test)
    assert server.requests == ["/mirror/cifar-10-python.tar.gz"] * 2


def test_corrupt_download_is_one_line_and_leaves_nothing(server, cache, archive, monkeypatch):
    body, md5, _, _ = archive
    corrupt = bytearray(body)
    corrupt[len(corrupt) // 2] ^= 0xFF
    server.files["/c.tar.gz"] = bytes(corrupt)
    monkeypatch.setenv("ARDM_CIFAR10_URL", f"{server.base}/c.tar.gz")
    with pytest.raises(DataError) as info:
        load_dataset(f"cifar10?md5={md5}", "test")
    actual = hashlib.md5(corrupt).hexdigest()
    assert str(info.value) == (
        f"{server.base}/c.tar.gz: md5 mismatch (expected {md5}, got {actual}); download discarded"
    )
    assert _files(cache) == []  # the cache folder exists, without a partial or temporary file


@pytest.mark.parametrize("failure", ["404", "refused", "short"])
def test_failed_download_is_one_line_and_leaves_nothing(server, cache, archive, monkeypatch, failure):
    body, md5, _, _ = archive
    if failure == "refused":
        with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
            probe.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{probe.getsockname()[1]}/cifar-10-python.tar.gz"
        reason = "Connection refused"
    elif failure == "404":
        url = f"{server.base}/missing.tar.gz"
        reason = "HTTP 404 Not Found"
    else:
        server.files["/short.tar.gz"] = body
        server.short.add("/short.tar.gz")
        url = f"{server.base}/short.tar.gz"
        reason = f"connection closed after {len(body)} of {len(body) + 1} bytes"
    monkeypatch.setenv("ARDM_CIFAR10_URL", url)
    with pytest.raises(DataError) as info:
        load_dataset(f"cifar10?md5={md5}", "train")
    assert str(info.value) == f"{url}: download failed ({reason})"
    assert _files(cache) == []


def test_interrupted_download_leaves_nothing(server, cache, archive, monkeypatch):
    body, md5, _, _ = archive
    server.files["/c.tar.gz"] = body

    class Interrupting(PlainProgress):
        def update(self, n: int = 1) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(download, "progress_bar", lambda **options: Interrupting(None, options["desc"], None))
    with pytest.raises(KeyboardInterrupt):
        fetch(f"{server.base}/c.tar.gz", md5, "c.tar.gz", cache)
    assert _files(cache) == []


def test_fetch_replaces_only_a_bad_cached_copy(server, tmp_path, archive):
    body, md5, _, _ = archive
    server.files["/a.bin"] = body
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"stale")
    # A corrupt download never replaces what is there.
    server.files["/bad.bin"] = b"garbage"
    with pytest.raises(DataError, match="md5 mismatch"):
        fetch(f"{server.base}/bad.bin", md5, "a.bin", folder, progress=False)
    assert (folder / "a.bin").read_bytes() == b"stale" and _files(folder) == ["a.bin"]
    # A good one does; then the checked copy is reused.
    assert fetch(f"{server.base}/a.bin", md5, "a.bin", folder, progress=False) == folder / "a.bin"
    assert fetch(f"{server.base}/a.bin", md5, "a.bin", folder, progress=False).read_bytes() == body
    assert server.requests == ["/bad.bin", "/a.bin"]
    # md5=None accepts whatever is there.
    assert fetch(f"{server.base}/none.bin", None, "a.bin", folder).read_bytes() == body
    assert server.requests == ["/bad.bin", "/a.bin"]


@pytest.mark.parametrize("where", ["file", "folder"])
def test_download_option_with_a_path(server, cache, archive, monkeypatch, tmp_path, where):
    body, md5, train, _ = archive
    server.files["/cifar-10-python.tar.gz"] = body
    monkeypatch.setenv("ARDM_MIRROR", server.base)
    folder = tmp_path / "data" / "cifar"
    location = folder / "cifar-10-python.tar.gz" if where == "file" else folder
    spec = f"cifar10:{location}?download=1&md5={md5}"
    assert str(parse_spec(spec)) == f"cifar10:{location}?download=1&md5={md5}"
    np.testing.assert_array_equal(load_dataset(spec, "train").images, train)
    assert _files(folder) == ["cifar-10-python.tar.gz"] and not cache.exists()
    np.testing.assert_array_equal(load_dataset(spec, "train").images, train)
    np.testing.assert_array_equal(load_dataset(f"cifar10:{location}?md5={md5}", "train").images, train)
    assert server.requests == ["/cifar-10-python.tar.gz"]


def test_missing_path_without_download_still_fails_and_suggests_it(server, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("ARDM_MIRROR", server.base)
    missing = tmp_path / "nope.tar.gz"
    with pytest.raises(DataError) as info:
        load_dataset(f"cifar10:{missing}", "train")
    message = str(info.value)
    assert re.match(rf"^{re.escape(str(missing))}: no such file or directory \(", message)
    assert "cifar10 without a path" in message and f"cifar10:{missing}?download=1" in message
    assert "\n" not in message
    # A failed download to a path leaves nothing there either.
    with pytest.raises(DataError, match="download failed \\(HTTP 404 Not Found\\)$"):
        load_dataset(f"cifar10:{missing}?download=1", "train")
    assert _files(tmp_path) == []
    assert server.requests == ["/cifar-10-python.tar.gz"]


def test_bad_split_or_option_downloads_nothing(server, cache, monkeypatch):
    monkeypatch.setenv("ARDM_MIRROR", server.base)
    with pytest.raises(DataError, match="unknown split"):
        load_dataset("cifar10", "valid")
    with pytest.raises(DataError, match="option download='yes' must be 0 or 1"):
        load_dataset("cifar10?download=yes", "test")
    assert server.requests == [] and not cache.exists()


def _text8_body(tmp_path: Path) -> tuple[bytes, str, str]:
    """(bytes, md5, text) of a small text8.zip in the official layout: one member `text8`, one line."""
    text = ("anarchism originated as a term of abuse first used against early working class radicals " * 40)[:3000]
    path = tmp_path / "built" / "text8.zip"
    path.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("text8", text)
    return path.read_bytes(), hashlib.md5(path.read_bytes()).hexdigest(), text


def test_text8_without_path_downloads_once_into_the_cache(server, cache, monkeypatch, tmp_path, capsys):
    body, md5, text = _text8_body(tmp_path)
    server.files["/text8.zip"] = body
    monkeypatch.setitem(SOURCES, "text8", Source(f"{server.base}/text8.zip", md5, "text8.zip"))
    test = load_dataset("text8?length=50", "test")
    assert "download text8.zip" in capsys.readouterr().err
    assert test.modality == "text" and decode_text(test.images) == text[2850:]  # the last 5%
    assert _files(cache) == ["text8.zip"] and (cache / "text8.zip").read_bytes() == body
    assert load_dataset("text8?length=50", "train").images.shape == (54, 1, 1, 50)  # the first 90%
    assert server.requests == ["/text8.zip"]


def test_text8_download_option_with_a_path_and_a_corrupt_download(server, cache, monkeypatch, tmp_path):
    body, md5, text = _text8_body(tmp_path)
    server.files["/text8.zip"] = body
    monkeypatch.setenv("ARDM_MIRROR", server.base)
    folder = tmp_path / "data"
    spec = f"text8:{folder}?download=1&md5={md5}&length=100"
    assert decode_text(load_dataset(spec, "train").images) == text[:2700]
    assert _files(folder) == ["text8.zip"] and not cache.exists()
    server.files["/text8.zip"] = body[:-10] + b"0" * 10  # a corrupt copy: one line, no file left
    with pytest.raises(DataError, match="md5 mismatch") as info:
        load_dataset(f"text8:{tmp_path / 'other'}?download=1&md5={md5}", "train")
    assert "\n" not in str(info.value) and _files(tmp_path / "other") == []
