"""Reading UTF-8 text with errors that name the file, and atomic file writes: a crash mid-write
leaves the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path


def read_utf8(path: str | Path, error: type[Exception], expected: str = "a text file") -> str:
    """The whole of a UTF-8 text file. A missing file, a directory, an unreadable file or bytes
    that are not UTF-8 raise `error` with one line naming the file (and the line of the bad byte)."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise error(f"{path}: not found, expected {expected}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, expected {expected}") from None
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte 0x{e.object[e.start]:02x}); re-save it as UTF-8") from None


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` on a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_file_beside(path)
    mode = stat.S_IMODE(tmp_path.stat().st_mode)  # 0o666 less the umask
    try:
        write(tmp_path)
        if stat.S_IMODE(tmp_path.stat().st_mode) != mode:  # a writer that made a file of its own
            os.chmod(tmp_path, mode)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _new_file_beside(path: Path) -> Path:
    """A new, empty, uniquely named file in `path`'s directory, created with mode 0o666 less the
    user's umask, as `open()` and `torch.save` create files (`mkstemp`, and safetensors' own
    writer, make them 0600: private to the user whatever the umask says)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{path.parent}: no free temporary name beside {path.name}")


def file_sha256(path: Path) -> hashlib._Hash:
    """The SHA-256 of a file's bytes, read in 4 MiB chunks (`.digest()` or `.hexdigest()` it)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def replace_dir(staged: Path, final: Path) -> None:
    """Put the fully written directory `staged` in place of `final`.

    The old `final` is moved aside first and removed last; if a crash lands between the two
    renames, `final.old` still holds a complete copy (see `existing_dir`).
    """
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staged, final)
    if old.exists():
        shutil.rmtree(old)


def existing_dir(final: Path) -> Path | None:
    """`final`, or the copy `replace_dir` set aside if it was interrupted."""
    old = final.with_name(final.name + ".old")
    return final if final.exists() else (old if old.exists() else None)
