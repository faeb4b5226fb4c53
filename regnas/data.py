"""Fashion-MNIST: find, verify and read the four official IDX files, and split them.

Files are looked up in this order: an explicit directory (``--data-dir`` or ``REGNAS_DATA_DIR``),
Debian's ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``), and the user
cache (``$XDG_CACHE_HOME/regnas/fashion-mnist``). When none has all four files, they are
downloaded into the explicit directory or the cache and verified by SHA-256.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import os
from pathlib import Path
import shutil
import tempfile
import urllib.error
import urllib.request

import numpy as np


_logger = logging.getLogger(__name__)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_DIR_ENV = "REGNAS_DATA_DIR"
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILENAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# Published download locations of the Fashion-MNIST authors (zalandoresearch/fashion-mnist).
DOWNLOAD_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
# SHA-256 of the official archives (as published by dataset loaders that download them), and of
# their decompressed IDX payload, computed from Debian's package: Debian recompressed the archives,
# so a recompressed mirror passes when its payload matches.
ARCHIVE_SHA256 = {
    TRAIN_IMAGES: "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
    TRAIN_LABELS: "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
    TEST_IMAGES: "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
    TEST_LABELS: "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
}
PAYLOAD_SHA256 = {
    TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
# Split seed: fixed, so that every study and every retraining validates on the same images.
SPLIT_SEED = 20200330


@dataclasses.dataclass(frozen=True)
class Splits:
    """Train and validation arrays: uint8 images (N, 28, 28, 1) and int32 labels (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "regnas" / "fashion-mnist"


def find_data_dir(data_dir: str | Path | None = None, download: bool = True) -> Path:
    """Return a directory holding all four Fashion-MNIST files, downloading them if needed.

    An explicit directory (`data_dir`, else ``$REGNAS_DATA_DIR``) is the only place looked at:
    it must exist, and files missing there are downloaded into it, never taken from elsewhere,
    so a typo in the path cannot silently train on other data. Without one, Debian's directory
    and then the user cache are searched, and a download goes to the cache.

    Args:
        data_dir: Explicit directory; defaults to ``$REGNAS_DATA_DIR`` when that is set.
        download: Whether to download the files when no directory has them.

    Raises:
        FileNotFoundError: The explicit directory does not exist, or no directory has the files
            and the download failed or was disabled.
    """
    explicit = Path(data_dir) if data_dir else None
    if explicit is None and os.environ.get(DATA_DIR_ENV):
        explicit = Path(os.environ[DATA_DIR_ENV])
    if explicit and not explicit.is_dir():
        raise FileNotFoundError(
            f"Data directory {explicit} (--data-dir or {DATA_DIR_ENV}) does not exist. Fix the "
            "path, or create the directory to download Fashion-MNIST into it."
        )
    candidates = [explicit] if explicit else [DEBIAN_DIR, default_cache_dir()]
    for candidate in candidates:
        if all((candidate / name).is_file() for name in FILENAMES):
            _logger.debug("Fashion-MNIST found in %s", candidate.resolve())
            return candidate

    target = explicit or default_cache_dir()
    searched = ", ".join(str(path) for path in candidates)
    if not download:
        raise FileNotFoundError(_missing_message(searched))
    if explicit:
        _logger.warning("%s lacks Fashion-MNIST files; downloading them into it.", explicit)
    try:
        download_files(target)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"{_missing_message(searched)} The download failed: {error}"
        ) from None
    return target


def _missing_message(searched: str) -> str:
    return (
        f"Fashion-MNIST files {list(FILENAMES)} were not found in: {searched}. Install them with "
        "'apt-get install dataset-fashion-mnist', or copy the four files into a directory and "
        f"pass --data-dir DIR (or set {DATA_DIR_ENV})."
    )


def download_files(
    target: Path,
    urls: tuple[str, ...] = DOWNLOAD_URLS,
    archive_sha256: dict[str, str] = ARCHIVE_SHA256,
    payload_sha256: dict[str, str] = PAYLOAD_SHA256,
    timeout: float = 60.0,
) -> None:
    """Download the four files into `target`, trying each base URL in turn, and verify them.

    A file only lands in `target` after its checksum matched, so an interrupted or corrupted
    download never leaves a file behind that a later run would trust.
    """
    target.mkdir(parents=True, exist_ok=True)
    for name in FILENAMES:
        if (target / name).is_file():
            continue
        errors = []
        for base in urls:
            url = base + name
            _logger.info("Downloading %s", url)
            try:
                _fetch_verified(
                    url, target / name, archive_sha256[name], payload_sha256[name], timeout
                )
                break
            except (OSError, ValueError) as error:
                errors.append(f"{url}: {error}")
        else:
            raise OSError("; ".join(errors))


def _fetch_verified(
    url: str, path: Path, archive_sha: str, payload_sha: str, timeout: float
) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".part") as part:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, part)
            part.close()
            digest = _sha256(Path(part.name))
            if digest != archive_sha:
                with gzip.open(part.name, "rb") as payload:
                    payload_digest = hashlib.file_digest(payload, "sha256").hexdigest()
                if payload_digest != payload_sha:
                    raise ValueError(
                        f"checksum mismatch: SHA-256 {digest}, expected {archive_sha} "
                        f"(or payload {payload_sha})"
                    )
            os.replace(part.name, path)
        finally:
            Path(part.name).unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def read_idx(path: Path) -> np.ndarray:
    """Read one gzip-compressed IDX file of unsigned bytes (images or labels)."""
    try:
        with gzip.open(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"Cannot read IDX file {path}: {error}. Delete it and retry.") from None
    if len(raw) < 8:
        raise ValueError(f"IDX file {path} is truncated ({len(raw)} bytes).")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (_IMAGES_MAGIC, _LABELS_MAGIC):
        raise ValueError(f"{path} is not an IDX file of bytes (magic number {magic:#x}).")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise ValueError(f"IDX file {path} has {len(raw)} bytes, its header implies {expected}.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_arrays(data_dir: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return (images NHWC uint8, labels int32) of the training or the test set."""
    images_name, labels_name = (
        (TRAIN_IMAGES, TRAIN_LABELS) if train else (TEST_IMAGES, TEST_LABELS)
    )
    images = read_idx(data_dir / images_name)
    labels = read_idx(data_dir / labels_name)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{data_dir}: images of shape {images.shape} do not match labels of shape "
            f"{labels.shape}; expected (N, H, W) and (N,)."
        )
    return images[..., None], labels.astype(np.int32)


def count_training_images(data_dir: Path) -> int:
    """Return the number of training images, reading only the small labels file."""
    return len(read_idx(data_dir / TRAIN_LABELS))


def check_split_sizes(available: int, train_size: int | None, val_size: int) -> int:
    """Validate the split of `available` training images; return the resolved train size."""
    if val_size < 1 or val_size >= available:
        raise ValueError(f"--val-size must be in [1, {available - 1}], got {val_size}.")
    if train_size is None:
        return available - val_size
    if train_size < 1 or train_size + val_size > available:
        raise ValueError(
            f"--train-size {train_size} + --val-size {val_size} exceeds the {available} "
            "training images; lower one of them."
        )
    return train_size


def load_splits(data_dir: Path, train_size: int | None, val_size: int) -> Splits:
    """Split the official training set into train and validation parts with a fixed seed.

    Args:
        data_dir: Directory with the four files (see `find_data_dir`).
        train_size: Training images to keep; None keeps all that the validation part leaves.
        val_size: Validation images, held out from the training set.
    """
    images, labels = load_arrays(data_dir, train=True)
    available = len(images)
    train_size = check_split_sizes(available, train_size, val_size)
    order = np.random.default_rng(SPLIT_SEED).permutation(available)
    val_index, train_index = order[:val_size], order[val_size : val_size + train_size]
    return Splits(images[train_index], labels[train_index], images[val_index], labels[val_index])
