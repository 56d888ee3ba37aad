"""Atomic file writes and safe terminal text.

Contract: :func:`write_atomically` and :func:`atomic_file` never leave a
partial file at the target path and never follow a planted file: the
temporary file is created by :func:`tempfile.mkstemp` (``O_CREAT | O_EXCL``,
an unpredictable name, mode 0600 widened to the umask default) in the target's
own folder, then moved over the target with :func:`os.replace`; on any failure
it is removed and the target is left as it was.  :func:`printable` escapes
control characters so that user text (paths, names) printed in one line stays
one line.

>>> import os, tempfile
>>> folder = tempfile.mkdtemp()
>>> target = os.path.join(folder, "out.txt")
>>> write_atomically(target, "hello\\n")
>>> open(target).read()
'hello\\n'
>>> sorted(os.listdir(folder))
['out.txt']
>>> printable("evil\\nsymgrad: forged\\x1b[31m")
'evil\\\\nsymgrad: forged\\\\x1b[31m'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_file", "printable", "write_atomically"]

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object) -> str:
    """``str(text)`` with control and format characters escaped (one line, no ANSI).

    >>> printable("a\\tb\\u202ec")
    'a\\\\tb\\\\u202ec'
    """
    out = []
    for ch in str(text):
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _umask() -> int:
    """The process umask (read without changing it for long)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A fresh binary file next to ``path``, moved onto ``path`` when the block succeeds.

    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "x.bin")
    >>> with atomic_file(target) as handle:
    ...     _ = handle.write(b"data")
    >>> open(target, "rb").read()
    b'data'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(OSError):
            os.chmod(name, 0o666 & ~_umask())
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise


def write_atomically(path: str | os.PathLike, data: str | bytes, *,
                     encoding: str = "utf-8") -> None:
    """Write ``data`` (text or bytes) to ``path`` atomically; OSError on failure."""
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    with atomic_file(path) as handle:
        handle.write(payload)
