"""Fashion-MNIST loading: lookup order, IDX validation, verified downloads, splits."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
import shutil

import numpy as np
import pytest

from regnas import data as data_lib

from conftest import requires_real_data, write_idx


def _checksums(directory: Path) -> tuple[dict[str, str], dict[str, str]]:
    archive, payload = {}, {}
    for name in data_lib.FILENAMES:
        raw = (directory / name).read_bytes()
        archive[name] = hashlib.sha256(raw).hexdigest()
        payload[name] = hashlib.sha256(gzip.decompress(raw)).hexdigest()
    return archive, payload


def test_read_idx_round_trip(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", array)

    np.testing.assert_array_equal(data_lib.read_idx(tmp_path / "x.gz"), array)


def test_read_idx_rejects_bad_magic(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "bad.gz", "wb") as file:
        file.write(b"\x00\x00\x0d\x03" + b"\x00" * 16)

    with pytest.raises(ValueError, match="not an IDX file"):
        data_lib.read_idx(tmp_path / "bad.gz")


def test_read_idx_rejects_truncated(tmp_path: Path) -> None:
    write_idx(tmp_path / "x.gz", np.zeros((4, 28, 28), np.uint8))
    raw = gzip.decompress((tmp_path / "x.gz").read_bytes())
    (tmp_path / "short.gz").write_bytes(gzip.compress(raw[:-10]))

    with pytest.raises(ValueError, match="header implies"):
        data_lib.read_idx(tmp_path / "short.gz")


def test_read_idx_rejects_non_gzip(tmp_path: Path) -> None:
    (tmp_path / "plain.gz").write_bytes(b"not gzip at all")

    with pytest.raises(ValueError, match="Cannot read IDX file"):
        data_lib.read_idx(tmp_path / "plain.gz")


def test_explicit_dir_comes_first(idx_dir: Path, isolated_data: Path) -> None:
    assert data_lib.find_data_dir(idx_dir, download=False) == idx_dir


def test_environment_variable_used(
    idx_dir: Path, isolated_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(data_lib.DATA_DIR_ENV, str(idx_dir))

    assert data_lib.find_data_dir(None, download=False) == idx_dir


def test_cache_used_when_debian_missing(idx_dir: Path, isolated_data: Path) -> None:
    shutil.copytree(idx_dir, isolated_data)

    assert data_lib.find_data_dir(None, download=False) == isolated_data


def test_missing_files_explain_fix(isolated_data: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data_lib.find_data_dir(tmp_path / "empty", download=False)


def test_download_verifies_checksums(idx_dir: Path, tmp_path: Path) -> None:
    archive, payload = _checksums(idx_dir)
    target = tmp_path / "downloaded"

    data_lib.download_files(
        target, urls=(idx_dir.as_uri() + "/",), archive_sha256=archive, payload_sha256=payload
    )

    for name in data_lib.FILENAMES:
        assert (target / name).read_bytes() == (idx_dir / name).read_bytes()
    assert list(target.glob("*.part")) == []


def test_download_accepts_recompressed_payload(idx_dir: Path, tmp_path: Path) -> None:
    _, payload = _checksums(idx_dir)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in data_lib.FILENAMES:
        raw = gzip.decompress((idx_dir / name).read_bytes())
        (mirror / name).write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))
    wrong_archive = dict.fromkeys(data_lib.FILENAMES, "0" * 64)

    data_lib.download_files(
        tmp_path / "out",
        urls=(mirror.as_uri() + "/",),
        archive_sha256=wrong_archive,
        payload_sha256=payload,
    )

    assert all((tmp_path / "out" / name).is_file() for name in data_lib.FILENAMES)


def test_download_rejects_bad_checksum(idx_dir: Path, tmp_path: Path) -> None:
    wrong = dict.fromkeys(data_lib.FILENAMES, "0" * 64)
    target = tmp_path / "downloaded"

    with pytest.raises(OSError, match="checksum mismatch"):
        data_lib.download_files(
            target, urls=(idx_dir.as_uri() + "/",), archive_sha256=wrong, payload_sha256=wrong
        )

    # Nothing unverified is left behind for a later run to trust.
    assert list(target.iterdir()) == []


def test_download_tries_next_mirror(idx_dir: Path, tmp_path: Path) -> None:
    archive, payload = _checksums(idx_dir)
    missing = (tmp_path / "nowhere").as_uri() + "/"

    data_lib.download_files(
        tmp_path / "out",
        urls=(missing, idx_dir.as_uri() + "/"),
        archive_sha256=archive,
        payload_sha256=payload,
    )

    assert all((tmp_path / "out" / name).is_file() for name in data_lib.FILENAMES)


def test_failed_download_explains_fix(
    isolated_data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = (tmp_path / "nowhere").as_uri() + "/"
    monkeypatch.setattr(data_lib, "DOWNLOAD_URLS", (missing,))
    original = data_lib.download_files

    def offline_download(target: Path) -> None:
        original(target, urls=(missing,))

    monkeypatch.setattr(data_lib, "download_files", offline_download)

    with pytest.raises(FileNotFoundError, match="download failed"):
        data_lib.find_data_dir(None)


def test_splits_are_disjoint_and_fixed(idx_dir: Path) -> None:
    first = data_lib.load_splits(idx_dir, train_size=500, val_size=200)
    second = data_lib.load_splits(idx_dir, train_size=800, val_size=200)

    assert first.train_images.shape == (500, 28, 28, 1)
    assert first.val_images.shape == (200, 28, 28, 1)
    assert first.train_labels.dtype == np.int32
    # The validation part depends only on val_size, never on train_size or a study seed.
    np.testing.assert_array_equal(first.val_images, second.val_images)
    train_rows = {image.tobytes() for image in first.train_images}
    assert not any(image.tobytes() in train_rows for image in first.val_images)


def test_splits_reject_oversized_request(idx_dir: Path) -> None:
    with pytest.raises(ValueError, match="exceeds the 1200 training images"):
        data_lib.load_splits(idx_dir, train_size=1100, val_size=200)


@requires_real_data
def test_real_fashion_mnist_shapes() -> None:
    images, labels = data_lib.load_arrays(data_lib.DEBIAN_DIR, train=True)
    test_images, test_labels = data_lib.load_arrays(data_lib.DEBIAN_DIR, train=False)

    assert images.shape == (60000, 28, 28, 1)
    assert test_images.shape == (10000, 28, 28, 1)
    assert sorted(np.unique(labels)) == list(range(10))
    assert np.bincount(test_labels).tolist() == [1000] * 10


@requires_real_data
def test_debian_payload_matches_official() -> None:
    _, payload = _checksums(data_lib.DEBIAN_DIR)

    assert payload == data_lib.PAYLOAD_SHA256


def test_explicit_dir_without_files_never_falls_back(
    idx_dir: Path, isolated_data: Path, tmp_path: Path
) -> None:
    # The cache has every file, but an explicit directory is the only place looked at.
    shutil.copytree(idx_dir, isolated_data)
    empty = tmp_path / "empty"
    empty.mkdir()

    with pytest.raises(FileNotFoundError) as error:
        data_lib.find_data_dir(empty, download=False)

    assert str(empty) in str(error.value)
    assert str(isolated_data) not in str(error.value)


def test_missing_explicit_dir_fails(isolated_data: Path, tmp_path: Path) -> None:
    typo = tmp_path / "fashoin-mnist"

    with pytest.raises(FileNotFoundError, match=r"does not exist\. Fix the path"):
        data_lib.find_data_dir(typo)

    assert not typo.exists()
