"""Atomic output writing (a file is either absent or complete), safe file names, a journal that
survives torn lines, and output folders a refused command does not leave behind."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; outputs get the mode an ordinary open() would give them
FILE_MODE = 0o666 & ~_current_umask()
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def safe_file_stem(name: str) -> str:
    """A file name stem for a user-given id that stays inside its folder and never collides.

    Ids of plain characters (letters, digits, `._-`, not starting with `.`, up to 100) are used as
    they are; any other id (`../x`, `/abs`, `a/b`, `..`, an empty or very long one) becomes its
    sanitised text plus `~` and a hash of the id. `~` never occurs in a plain id, so a sanitised
    stem never equals a plain one, and the hash keeps two different ids apart."""
    name = str(name)
    if _SAFE_NAME.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60]
    return f"{readable}~{digest}"


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_save_image(path: str | Path, image: Image.Image) -> Path:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def mask_image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(np.asarray(mask, bool).astype(np.uint8) * 255, mode="L")


def append_jsonl(path: str | Path, *records: dict) -> None:
    """Append records, one per line, as a single write + fsync; a crash leaves at most one partial last line,
    and the next append starts on a new line (a torn fragment never swallows the record after it)."""
    data = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode()
    with open(path, "ab+") as handle:
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                data = b"\n" + data
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _parse_lines(data: bytes) -> tuple[list[dict], int]:
    records, torn = [], 0
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            torn += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            torn += 1
    return records, torn


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a journal; torn or corrupt lines (an interrupted append, a damaged file) are skipped with a
    warning — `repair_jsonl` drops them from the file."""
    path = Path(path)
    if not path.exists():
        return []
    records, torn = _parse_lines(path.read_bytes())
    if torn:
        logger.warning("%s: skipped %d torn or corrupt line(s)", path, torn)
    return records


def repair_jsonl(path: str | Path) -> int:
    """Rewrite a journal (atomically) without its torn or corrupt lines; returns how many were dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    records, torn = _parse_lines(data)
    if torn or (data and not data.endswith(b"\n")):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        atomic_write_text(path, text)
    return torn


def check_writable_dir(out: Path, flag: str) -> None:
    """Create `out` if needed and prove it writable (an existing file, a path under a file or a read-only
    folder fails here, not after inference)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / ".write_test", "")
        (out / ".write_test").unlink()
    except OSError as err:
        raise ValueError(f"{flag} {out}: cannot write there ({err.strerror or err})") from None


@contextmanager
def removed_if_refused(out: Path, setup_files: tuple[str, ...] = ()):
    """A command refused with OSError/ValueError leaves no folder behind that it created for its outputs: if `out`
    did not exist before, what was created is removed, but only while it holds nothing except empty folders and
    `setup_files` (bookkeeping written before any result, e.g. the settings file). A result is never removed."""
    top, path = None, Path(out).absolute()
    while not path.exists() and path != path.parent:
        top, path = path, path.parent
    try:
        yield
    except (OSError, ValueError):
        if top is not None and top.is_dir() and _only_setup(top, Path(out).absolute(), setup_files):
            shutil.rmtree(top)
        raise


def _only_setup(top: Path, out: Path, setup_files: tuple[str, ...]) -> bool:
    allowed = {out / name for name in setup_files}
    return all(p.is_dir() and not p.is_symlink() or p in allowed for p in top.rglob("*"))
