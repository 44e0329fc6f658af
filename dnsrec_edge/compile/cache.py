"""A folder of compiled artifacts keyed by what determines them, reused after their checksums verify.

The key is the sha256 of the ONNX bytes, the target, the batch, and the tool and TVM
versions; an entry is a copy of an artifact folder. A damaged entry (a file whose sha256 no
longer matches the manifest) is ignored and compiled again. Entries are written atomically
(copied under a temporary name, then renamed); when two runs race, the first entry stays.

Example::

    artifact, reused = compile_cached("model.onnx", "arm64", "out/arm64", "runs/r/cache/compile")
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import shutil
import tempfile
from pathlib import Path

from dnsrec_edge import __version__
from dnsrec_edge.compile.artifact import Artifact, load_artifact
from dnsrec_edge.errors import DnsrecError
from dnsrec_edge.fsio import sha256_file

log = logging.getLogger(__name__)


def cache_key(
    onnx_path: str | Path, target: str, batch: int = 1, threads: int | None = None
) -> str:
    """What names a cache entry: ONNX bytes, target, batch, thread count (when one is given),
    tool and TVM versions."""
    tvm = importlib.metadata.version("apache-tvm")
    text = f"{sha256_file(Path(onnx_path))} {target} batch={batch} {__version__} {tvm}"
    if threads is not None:
        text += f" threads={threads}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def compile_cached(
    onnx_path: str | Path,
    target: str,
    dest: str | Path,
    cache_dir: str | Path,
    *,
    batch: int = 1,
    threads: int | None = None,
    quiet: bool = False,
) -> tuple[Artifact, bool]:
    """The artifact of ``onnx_path`` for ``target`` (built for ``threads``, default the
    target's) at ``dest`` (a new folder), and whether it was reused from ``cache_dir`` rather
    than compiled (a fresh one is stored there)."""
    dest = Path(dest)
    cached = Path(cache_dir) / cache_key(onnx_path, target, batch, threads)
    art = _reuse(cached, dest)
    if art is not None:
        return art, True
    from dnsrec_edge.compile.build import compile as tvm_compile

    art = tvm_compile(
        onnx_path, target=target, out_dir=dest, batch=batch, threads=threads, quiet=quiet
    )
    _store(dest, cached)
    return art, False


def _reuse(cached: Path, dest: Path) -> Artifact | None:
    """A verified copy of the cached artifact at ``dest``, or ``None`` (then compile)."""
    if not cached.is_dir():
        return None
    shutil.copytree(cached, dest)
    try:
        art = load_artifact(dest)  # every file's sha256 against the manifest
    except DnsrecError as err:
        log.warning("compile cache entry %s is damaged (%s); compiling again", cached, err)
        shutil.rmtree(dest)
        return None
    log.info("reusing the artifact compiled earlier from %s", cached)
    return art


def _store(dest: Path, cached: Path) -> None:
    """Copy a fresh artifact into the cache (atomically: copy, then rename)."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".tmp-"))
    shutil.copytree(dest, tmp, dirs_exist_ok=True)
    try:
        tmp.rename(cached)
    except OSError:  # another entry landed first: keep it
        shutil.rmtree(tmp, ignore_errors=True)
