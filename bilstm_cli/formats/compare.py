"""Proof that a written file differs from its input only where it was meant to."""

from __future__ import annotations

import zipfile
from typing import Any

import h5py
import numpy as np

from bilstm_cli.formats.archive import WEIGHTS_H5
from bilstm_cli.formats.model import ModelFile
from bilstm_cli.formats.reader import open_weights
from bilstm_cli.formats.writer import digest

MAX_PROBLEMS = 20


def _same_value(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "O":
        return a.tolist() == b.tolist()
    return a.tobytes() == b.tobytes()


def _same_attrs(x: Any, y: Any) -> bool:
    if set(x.attrs) != set(y.attrs):
        return False
    return all(_same_value(x.attrs[k], y.attrs[k]) for k in x.attrs)


def compare_weights(
    before: h5py.Group, after: h5py.Group, written: dict[str, str], problems: list[str]
) -> set[str]:
    """Walk two HDF5 trees side by side; return the datasets seen."""
    seen: set[str] = set()
    stack = [""]
    while stack and len(problems) < MAX_PROBLEMS:
        path = stack.pop()
        g1 = before[path] if path else before
        g2 = after[path] if path else after
        if not _same_attrs(g1, g2):
            problems.append(f"attributes of '{path or '/'}' changed")
        if set(g1.keys()) != set(g2.keys()):
            problems.append(f"members of '{path or '/'}' changed")
            continue
        for name in g1.keys():
            child = f"{path}/{name}" if path else name
            l1, l2 = g1.get(name, getlink=True), g2.get(name, getlink=True)
            if not isinstance(l1, h5py.HardLink) or not isinstance(l2, h5py.HardLink):
                same_link = type(l1) is type(l2) and vars(l1) == vars(l2)
                if not same_link:
                    problems.append(f"link '{child}' changed")
                continue
            o1, o2 = g1[name], g2[name]
            if isinstance(o1, h5py.Group) and isinstance(o2, h5py.Group):
                stack.append(child)
            elif isinstance(o1, h5py.Dataset) and isinstance(o2, h5py.Dataset):
                seen.add(child)
                _compare_dataset(child, o1, o2, written, problems)
            else:
                problems.append(f"'{child}' changed kind")
    return seen


def _compare_dataset(
    path: str, d1: h5py.Dataset, d2: h5py.Dataset, written: dict[str, str], problems: list[str]
) -> None:
    if d1.shape != d2.shape or d1.dtype != d2.dtype:
        problems.append(f"dataset '{path}' changed shape or dtype")
        return
    if not _same_attrs(d1, d2):
        problems.append(f"attributes of dataset '{path}' changed")
    if d1.external or d1.is_virtual:
        return  # never read data from elsewhere; the reader already refused such weights
    new = d2[()]
    if path in written:
        if digest(np.asarray(new)) != written[path]:
            problems.append(f"dataset '{path}' does not hold the intended values")
    elif not _same_value(d1[()], new):
        problems.append(f"dataset '{path}' changed but was not selected")


def _zip_members(path: str) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(path) as z:
        return z.infolist()


def compare_archives(before: str, after: str, problems: list[str]) -> None:
    a, b = _zip_members(before), _zip_members(after)
    if [i.filename for i in a] != [i.filename for i in b]:
        problems.append("the archive's members changed")
        return
    for x, y in zip(a, b):
        fields = ("date_time", "compress_type", "external_attr", "comment")
        if any(getattr(x, f) != getattr(y, f) for f in fields):
            problems.append(f"metadata of archive member '{x.filename}' changed")
        if x.filename != WEIGHTS_H5 and (x.CRC, x.file_size) != (y.CRC, y.file_size):
            problems.append(f"archive member '{x.filename}' changed")


def unchanged_except(model: ModelFile, staged: str, written: dict[str, str]) -> list[str]:
    """Everything that differs between input and staged output beyond the written datasets."""
    problems: list[str] = []
    if model.format == "keras":
        compare_archives(model.path, staged, problems)
    with open_weights(model.path) as f1, open_weights(staged) as f2:
        seen = compare_weights(f1, f2, written, problems)
    missing = set(written) - seen
    if missing:
        problems.append(f"written datasets not found again: {', '.join(sorted(missing))}")
    return problems[:MAX_PROBLEMS]
