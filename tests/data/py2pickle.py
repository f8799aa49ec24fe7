"""Pickles as Python 2's cPickle wrote CIFAR's python-version files (protocol 2): a str is a
SHORT_BINSTRING / BINSTRING (read back as str with encoding="latin1", as bytes with
encoding="bytes"), and a numpy array is rebuilt by `numpy.core.multiarray._reconstruct` with
its pixels as one str: the official files' form, which Python 3's pickle no longer writes."""

from __future__ import annotations

import struct

import numpy as np


def dumps(obj) -> bytes:
    out = bytearray(b"\x80\x02")  # PROTO 2
    _save(obj, out)
    return bytes(out + b".")  # STOP


def _string(raw: bytes, out: bytearray) -> None:
    if len(raw) < 256:
        out += b"U" + bytes([len(raw)]) + raw  # SHORT_BINSTRING
    else:
        out += b"T" + struct.pack("<I", len(raw)) + raw  # BINSTRING


def _save(obj, out: bytearray) -> None:
    if obj is None:
        out += b"N"
    elif isinstance(obj, bool):
        out += b"\x88" if obj else b"\x89"  # NEWTRUE / NEWFALSE
    elif isinstance(obj, int):
        out += b"K" + bytes([obj]) if 0 <= obj < 256 else b"J" + struct.pack("<i", obj)
    elif isinstance(obj, str):
        _string(obj.encode("latin1"), out)
    elif isinstance(obj, (list, tuple, dict)):
        out += {list: b"](", tuple: b"(", dict: b"}("}[type(obj)]  # (EMPTY_LIST|DICT) MARK
        for item in obj.items() if isinstance(obj, dict) else obj:
            for part in item if isinstance(obj, dict) else (item,):
                _save(part, out)
        out += {list: b"e", tuple: b"t", dict: b"u"}[type(obj)]  # APPENDS / TUPLE / SETITEMS
    elif isinstance(obj, np.ndarray) and obj.dtype == np.uint8:
        out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"  # GLOBAL x2
        _save((0,), out)
        _string(b"b", out)
        out += b"\x87R"  # TUPLE3, REDUCE: _reconstruct(ndarray, (0,), "b")
        state = bytearray(b"(")  # (version, shape, dtype, fortran order, pixels)
        _save(1, state)
        _save(tuple(obj.shape), state)
        state += b"cnumpy\ndtype\n"
        _save(("u1", False, True), state)
        state += b"R"  # dtype("u1", False, True)
        _save((3, "|", None, None, None, -1, -1, 0), state)
        state += b"b"  # BUILD: the dtype's state
        _save(False, state)
        _string(np.ascontiguousarray(obj).tobytes(), state)
        out += state + b"tb"  # TUPLE, BUILD: the array's state
    else:
        raise TypeError(f"py2pickle cannot write {type(obj).__name__}")
