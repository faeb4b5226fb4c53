"""Training checkpoints: the full state of a retraining run after its latest epoch.

One msgpack file (`flax.serialization`) contains the parameters, BatchNorm statistics, optimizer
state, moving averages, the epoch, the PRNG key, the per-epoch history and the settings of the
run. It is replaced atomically after every epoch, so an interrupted run leaves the previous
complete checkpoint behind. A run resumes only with the settings that wrote the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
import contextlib
import fcntl
import json
import os
from pathlib import Path
import tempfile
from typing import Any

from flax import serialization
import jax
import jax.numpy as jnp
import numpy as np

from regnas.engine import Trainer, TrainState


CHECKPOINT_NAME = "checkpoint.msgpack"
LOCK_NAME = "checkpoint.lock"
FORMAT = "regnas.checkpoint"
VERSION = 1


@contextlib.contextmanager
def checkpoint_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` so that two runs never share a checkpoint.

    The lock is an `fcntl.flock` on a file in the directory; the system releases it when the
    process ends, so a killed run leaves no stale lock behind.

    Raises:
        ValueError: Another process holds the lock.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_NAME, "a") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"Another run is using the checkpoint directory {directory}. Wait for it to "
                "finish, or pass another --checkpoint-dir."
            ) from None
        yield


def write_atomic(path: Path, payload: bytes) -> None:
    """Write `payload` to a temporary file next to `path`, then rename it over `path`.

    A reader sees either the old file or the complete new one, even after a crash.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as temporary:
        try:
            # NamedTemporaryFile creates the file private (0600); give it the usual mode.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary.name, 0o666 & ~umask)
            temporary.write(payload)
            temporary.flush()
            os.fsync(temporary.fileno())
            temporary.close()
            os.replace(temporary.name, path)
        finally:
            Path(temporary.name).unlink(missing_ok=True)


def save_checkpoint(
    path: Path, trainer: Trainer, settings: Mapping[str, Any], history: list[dict[str, Any]]
) -> None:
    """Write the trainer's state after its latest epoch.

    Args:
        path: The checkpoint file.
        trainer: The trainer, between two epochs.
        settings: JSON-ready settings that a resumed run must repeat exactly.
        history: One JSON-ready record per trained epoch.
    """
    state = trainer.state
    tree = {
        "format": FORMAT,
        "version": VERSION,
        "settings": json.dumps(settings, sort_keys=True),
        "history": json.dumps(history),
        "epoch": trainer.epoch,
        "key": np.asarray(jax.random.key_data(trainer.key)),
        "state": _state_dict(state),
    }
    write_atomic(path, serialization.msgpack_serialize(jax.device_get(tree)))


def load_checkpoint(
    path: Path,
    trainer: Trainer,
    settings: Mapping[str, Any],
    labels: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Restore `trainer` from the checkpoint at `path` and return the saved epoch history.

    `labels` maps setting names to how an error names them, such as a command-line flag.
    `defaults` gives the values of settings that older checkpoints did not store.

    Raises:
        ValueError: The file is not a regnas checkpoint, or it was written with other settings;
            the message names the first differing setting. The file is left untouched.
    """
    fix = "Pass --fresh to replace it, or another --checkpoint-dir."
    raw = read_msgpack(path, FORMAT, VERSION, "a training checkpoint", fix)
    saved = {**(defaults or {}), **json.loads(raw["settings"])}
    current = json.loads(json.dumps(settings, sort_keys=True))
    for name in sorted(set(saved) | set(current)):
        if saved.get(name) != current.get(name):
            label = (labels or {}).get(name, name)
            # A flag reads as on the command line (--lr 0.1), other settings as name = value.
            label += " " if label.startswith("--") else " = "
            raise ValueError(
                f"Checkpoint {path} was written with {label}{_show(saved.get(name))}, but this "
                f"run has {label}{_show(current.get(name))}. Rerun with the checkpoint's "
                "settings to resume, pass --fresh to start over (the checkpoint is then replaced "
                "after the first epoch), or pass another --checkpoint-dir."
            )

    target = _state_dict(trainer.state)
    restored = restore_tree(target, raw["state"], str(path))
    opt_state = {
        names: serialization.from_state_dict(value, restored["opt_state"][",".join(names)])
        for names, value in trainer.state.opt_state.items()
    }
    state = TrainState(
        restored["params"], restored["batch_stats"], opt_state, restored["ema"] or None
    )
    key = jax.random.wrap_key_data(jnp.asarray(raw["key"]))
    trainer.restore(state, int(raw["epoch"]), key)
    return list(json.loads(raw["history"]))


def read_msgpack(
    path: Path, file_format: str, version: int, kind: str, fix: str
) -> dict[str, Any]:
    """Read a msgpack file of regnas and check its format and version.

    Args:
        path: The file.
        file_format: The expected value of the ``format`` entry.
        version: The version this regnas reads.
        kind: What the file should be, for error messages ("a saved model").
        fix: The sentence that ends every ValueError message: what the caller should do.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not valid msgpack or has another format or version.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected {kind} ({file_format}).")
    data = path.read_bytes()
    if data[:64].lstrip()[:1] in (b"{", b"["):
        raise ValueError(
            f"{path} is not {kind}: it is a JSON file, such as an architecture file, which "
            f"'python -m regnas.train --config FILE' trains. {fix}"
        )
    try:
        raw = serialization.msgpack_restore(data)
    except Exception as error:  # msgpack raises several unrelated types on bad bytes.
        reason = str(error).rstrip(".")
        raise ValueError(
            f"{path} is not {kind}: it cannot be read as msgpack ({reason}). {fix}"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != file_format:
        if isinstance(raw, dict) and "format" in raw:
            found = f"its format is {raw['format']!r}"
        elif isinstance(raw, dict):
            found = "it has no format entry"
        else:
            found = f"it holds a {type(raw).__name__}"
        raise ValueError(f"{path} is not {kind}: {found}, expected {file_format!r}. {fix}")
    if raw.get("version") != version:
        raise ValueError(
            f"{path} has {file_format} version {raw.get('version')!r}; this regnas reads "
            f"version {version}. Use the regnas version that wrote it. {fix}"
        )
    return raw


def restore_tree(target: Any, saved: Any, source: str) -> Any:
    """Return `saved` in the structure of `target`, after checking names and array shapes.

    Raises:
        ValueError: A name is missing or extra, or an array's shape differs; the message names
            the first such entry and `source`.
    """
    target_state = serialization.to_state_dict(target)
    want = dict(jax.tree_util.tree_flatten_with_path(target_state)[0])
    got = dict(jax.tree_util.tree_flatten_with_path(saved)[0])
    for path in sorted(set(want) | set(got), key=jax.tree_util.keystr):
        name = jax.tree_util.keystr(path)
        if path not in got:
            raise ValueError(f"{source} lacks the entry {name} that the architecture needs.")
        if path not in want:
            raise ValueError(f"{source} has the entry {name}, which the architecture lacks.")
        if np.shape(want[path]) != np.shape(got[path]):
            raise ValueError(
                f"{source}: entry {name} has shape {np.shape(got[path])}, but the architecture "
                f"needs {np.shape(want[path])}."
            )
    return serialization.from_state_dict(target, saved)


def _state_dict(state: TrainState) -> dict[str, Any]:
    # msgpack keys must be strings, so each segment's tuple of names becomes one string.
    return {
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": {
            ",".join(names): serialization.to_state_dict(value)
            for names, value in state.opt_state.items()
        },
        "ema": state.ema or {},
    }


def _show(value: Any) -> str:
    return "(not set)" if value is None else json.dumps(value, sort_keys=True)
