"""Model registry, cache folder, and hash-checked downloads from a local HTTP server.

No test touches the real network: an autouse fixture makes every connection to anything
but 127.0.0.1 fail at once, and the downloads are served by ``http.server`` on 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import re
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from napari_sam import _download, weights
from napari_sam.weights import (
    ChecksumError,
    DownloadCancelled,
    DownloadError,
    MissingDependencyError,
    ModelInfo,
    UnknownModelError,
    cache_dir,
    download,
    list_models,
    model_path,
)

_LOCAL = ("127.0.0.1", "localhost", "::1")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Refuse any connection that is not to this machine; isolate the cache folder."""
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else address
        if host not in _LOCAL:
            raise OSError(f"network access blocked in tests: {address}")
        return real_connect(self, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host not in _LOCAL:
            raise socket.gaierror(f"network access blocked in tests: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(_download, "_memo", {})
    weights.clear_model_cache()


class _Server:
    """A static file server on 127.0.0.1 that counts the requests it answers."""

    def __init__(self, root: Path) -> None:
        self.requests = 0
        self.root = root
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
        )
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[_Server, bytes]]:
    root = tmp_path / "www"
    root.mkdir()
    payload = os.urandom(2_500_000)  # a few 1 MiB chunks, so progress is reported several times
    (root / "model.pth").write_bytes(payload)
    server = _Server(root)
    yield server, payload
    server.stop()


def _entry(url: str, payload: bytes, known_hash: str | None = None) -> dict[str, ModelInfo]:
    digest = known_hash or "sha256:" + hashlib.sha256(payload).hexdigest()
    return {"test-model": ModelInfo("test-model", "vit_b", len(payload), url, digest, filename="test.pth")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- registry -------------------------------------------------------------------------------

def test_registry_lists_official_and_microscopy_models() -> None:
    names = [m.name for m in list_models()]
    assert names[0] == "tiny-synth"
    for name in ("vit_b", "vit_l", "vit_h", "vit_t", "vit_b_lm", "vit_b_em_organelles"):
        assert name in names
    assert len(set(names)) == len(names)


def test_registry_facts_are_well_formed() -> None:
    infos = [m for m in list_models() if m.url is not None]
    assert len({m.filename for m in infos}) == len(infos)
    for info in infos:
        algorithm, digest = _download.split_hash(info.known_hash or "")
        assert re.fullmatch(r"[0-9a-f]+", digest)
        assert len(digest) == {"sha256": 64, "xxh128": 32}[algorithm]
        assert info.url.startswith("https://")
        assert info.size_bytes is None or info.size_bytes > 0
        assert info.arch in {"vit_b", "vit_l", "vit_h", "vit_t"}
        assert info.description
    official = {m.name: m for m in infos if m.name in ("vit_b", "vit_l", "vit_h", "vit_t")}
    assert official["vit_b"].sha256 == "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"
    assert official["vit_b"].size_bytes == 375_042_383
    assert official["vit_h"].size_bytes > official["vit_l"].size_bytes > official["vit_b"].size_bytes
    assert official["vit_t"].url.endswith("/weights/mobile_sam.pt")


def test_cache_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert cache_dir() == (tmp_path / "elsewhere").resolve()
    assert model_path("vit_b") == cache_dir() / "weights" / "sam_vit_b_01ec64.pth"
    monkeypatch.delenv(weights.CACHE_ENV)
    assert "napari-sam" in str(cache_dir())


def test_is_cached_reflects_a_complete_file(tmp_path: Path) -> None:
    payload = b"x" * 1000
    registry = _entry("https://example.invalid/m.pth", payload)
    assert not list_models(registry)[-1].is_cached
    target = model_path("test-model", registry)
    target.parent.mkdir(parents=True)
    target.write_bytes(payload[:10])  # a partial file does not count
    assert not list_models(registry)[-1].is_cached
    target.write_bytes(payload)
    assert list_models(registry)[-1].is_cached


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownModelError, match="vit_b"):
        download("vit_zz")


# --- download -------------------------------------------------------------------------------

def test_download_checks_hash_and_reports_progress(served: tuple[_Server, bytes]) -> None:
    server, payload = served
    registry = _entry(server.url("model.pth"), payload)
    calls: list[tuple[int, int]] = []
    path = download("test-model", progress=lambda done, total: calls.append((done, total)), registry=registry)
    assert path == model_path("test-model", registry)
    assert path.read_bytes() == payload
    done = [d for d, _ in calls]
    assert len(calls) >= 3 and done == sorted(done) and done[-1] == len(payload)
    assert all(total == len(payload) for _, total in calls)
    assert list_models(registry)[-1].is_cached


def test_second_call_is_served_from_cache_offline(served: tuple[_Server, bytes]) -> None:
    server, payload = served
    registry = _entry(server.url("model.pth"), payload)
    first = download("test-model", registry=registry)
    server.stop()
    second = download("test-model", registry=registry)
    assert second == first and second.read_bytes() == payload
    assert server.requests == 1


def test_hash_mismatch_is_refused_and_not_kept(served: tuple[_Server, bytes]) -> None:
    server, payload = served
    wrong = "0" * 64
    registry = _entry(server.url("model.pth"), payload, known_hash="sha256:" + wrong)
    with pytest.raises(ChecksumError) as info:
        download("test-model", registry=registry)
    message = str(info.value)
    assert server.url("model.pth") in message and wrong in message
    assert hashlib.sha256(payload).hexdigest() in message
    folder = model_path("test-model", registry).parent
    assert not model_path("test-model", registry).exists()
    assert [p for p in folder.iterdir() if p.is_file()] == []  # no temporary file left either


def test_unreachable_server_says_where_to_put_the_file(tmp_path: Path) -> None:
    payload = b"weights"
    url = f"http://127.0.0.1:{_free_port()}/model.pth"
    registry = _entry(url, payload)
    with pytest.raises(DownloadError) as info:
        download("test-model", registry=registry)
    message = str(info.value)
    assert url in message
    assert str(model_path("test-model", registry)) in message
    assert hashlib.sha256(payload).hexdigest() in message


def test_non_local_urls_fail_fast_in_tests() -> None:
    registry = _entry("https://dl.example.org/model.pth", b"w")
    with pytest.raises(DownloadError, match="place the file by hand"):
        download("test-model", registry=registry)


def test_file_placed_by_hand_is_used_without_network() -> None:
    payload = b"hand-placed weights"
    registry = _entry(f"http://127.0.0.1:{_free_port()}/model.pth", payload)
    target = model_path("test-model", registry)
    target.parent.mkdir(parents=True)
    target.write_bytes(payload)
    assert download("test-model", registry=registry) == target


def test_damaged_cached_file_is_downloaded_again(served: tuple[_Server, bytes]) -> None:
    server, payload = served
    registry = _entry(server.url("model.pth"), payload)
    path = download("test-model", registry=registry)
    path.write_bytes(payload[:-100])  # e.g. a bad copy: size and mtime change
    assert download("test-model", registry=registry).read_bytes() == payload
    assert server.requests == 2


def test_cancel_stops_the_download_and_keeps_nothing(served: tuple[_Server, bytes]) -> None:
    server, payload = served
    registry = _entry(server.url("model.pth"), payload)
    event = threading.Event()
    event.set()
    with pytest.raises(DownloadCancelled):
        download("test-model", cancel=event, registry=registry)
    with pytest.raises(DownloadCancelled):
        download("test-model", cancel=lambda: True, registry=registry)
    folder = model_path("test-model", registry).parent
    assert [p for p in folder.iterdir() if p.is_file()] == []


def test_xxh128_hashes_are_checked(served: tuple[_Server, bytes]) -> None:
    xxhash = pytest.importorskip("xxhash")
    server, payload = served
    good = "xxh128:" + xxhash.xxh128(payload).hexdigest()
    path = download("test-model", registry=_entry(server.url("model.pth"), payload, good))
    assert path.read_bytes() == payload
    path.unlink()
    bad = _entry(server.url("model.pth"), payload, "xxh128:" + "f" * 32)
    with pytest.raises(ChecksumError, match="xxh128"):
        download("test-model", registry=bad)


def test_xxh128_without_xxhash_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xxhash", None)  # import fails as if not installed
    registry = _entry("http://127.0.0.1:9/m.pth", b"w", "xxh128:" + "0" * 32)
    with pytest.raises(MissingDependencyError, match="pip install xxhash"):
        download("test-model", registry=registry)


def test_hash_stamp_skips_rehashing_unchanged_files(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 1000)
    stamps = tmp_path / "stamps"
    first = _download.file_hashes(path, ["sha256"], stamps)["sha256"]
    assert first == hashlib.sha256(b"a" * 1000).hexdigest()
    stat = path.stat()
    # Same size and mtime: the stamp is trusted (this is what makes a cached load cheap),
    # also in a new process (the in-memory memo is cleared here).
    path.write_bytes(b"b" * 1000)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    _download._memo.clear()
    assert _download.file_hashes(path, ["sha256"], stamps)["sha256"] == first
    # Any change of mtime (a normal edit or copy) means hashing again.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    rehashed = _download.file_hashes(path, ["sha256"], stamps)["sha256"]
    assert rehashed == hashlib.sha256(b"b" * 1000).hexdigest()


def test_load_model_by_registry_name_downloads_once(
    served: tuple[_Server, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from napari_sam.model import SamConfig, build_sam

    server, _ = served
    config = SamConfig(
        img_size=64, embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=2,
        prompt_embed_dim=32, mask_in_chans=4, decoder_depth=1, decoder_mlp_dim=64, iou_head_hidden_dim=32,
    )
    torch.save(build_sam(config).state_dict(), server.root / "tiny.pt")
    payload = (server.root / "tiny.pt").read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    entry = ModelInfo("tiny-test", "custom", len(payload), server.url("tiny.pt"), "sha256:" + digest,
                      filename="tiny-test.pt")
    monkeypatch.setitem(weights.REGISTRY, "tiny-test", entry)
    seen: list[int] = []
    model = weights.load_model("tiny-test", device="cpu", progress=lambda d, t: seen.append(d))
    assert model.name == "tiny-test" and model.weights_hash == digest and model.config == config
    assert seen and seen[-1] == len(payload)
    server.stop()
    weights.clear_model_cache()
    again = weights.load_model("tiny-test", device="cpu")
    assert again.weights_hash == digest and server.requests == 1
