"""CIFAR's pickles read without running code: an unpickler that resolves only the globals the
official files, and faithful re-pickled copies of them, name.

A pickle is a program: each global it names is imported and may be called with arguments the
file chooses (`os.system`, `builtins.eval`, ...). The python-version CIFAR-10 and CIFAR-100
files hold dicts, lists, str/bytes and ints, which need no global, and one numpy uint8 array,
rebuilt from `numpy.ndarray`, `numpy.dtype` and numpy's array-reconstruction function. So those
are all this unpickler resolves; any other global is refused before it is imported, and the
file is a one-line `DataError`.

The globals a faithful copy may name, besides those of the 2009 files (Python 2, protocol 2):
- `numpy.core.multiarray._reconstruct` (numpy 1, and the 2009 files) is `numpy._core...` in
  numpy 2; `numpy._core.numeric._frombuffer` is the same array as pickle protocol 5 writes it;
- Python 3 writes bytes under protocol 2 as `_codecs.encode(text, "latin1")` (`bytes()` when
  empty): allowed only in that form.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

from bnexp.errors import DataError


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """`_codecs.encode` as Python 3 pickles bytes under protocol 2, and no other codec."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}: only latin1 is allowed")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    """`bytes()` as Python 3 pickles b"" under protocol 2."""
    return b""


# (module, name) as the pickle names it -> what it resolves to. Nothing else is ever imported.
ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("__builtin__", "bytes"): _empty_bytes,  # protocol 2 names Python 3's builtins so
    ("builtins", "bytes"): _empty_bytes,
}


class DisallowedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        qualname = f"{module}.{name}"  # the file's text: shown escaped unless printable
        self.qualname = qualname if qualname.isprintable() else ascii(qualname)
        super().__init__(self.qualname)


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise DisallowedGlobal(module, name) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def load(path: Path, what: str) -> Any:
    """The object pickled in `path`, read as `pickle.load(f, encoding="latin1")` reads it (str
    for Python 2's str) but resolving only the globals in `ALLOWED`. `what`: the file's kind,
    for messages ("a CIFAR-10 batch")."""
    try:
        with path.open("rb") as f:
            return _Restricted(f, encoding="latin1").load()
    except DisallowedGlobal as e:
        raise DataError(
            f"{path}: refused to unpickle it: it names the global {e.qualname}, which {what} "
            "never holds (a pickle's globals can run code; allowed: dicts, lists, str, bytes, "
            "ints and numpy arrays)"
        ) from None
    except Exception as e:  # a damaged pickle can fail in many ways: EOFError, UnpicklingError, ...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"{path}: cannot unpickle it, the file is truncated or corrupt ({reason})"
        ) from None
