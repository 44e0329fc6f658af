"""Streaming sessions: keep a user's key/value cache on the device and push one item at a time.

What a device app uses. Runs with the TVM runtime (or ONNX Runtime) and numpy only: no
torch, no compiler, like ``device serve``::

    session = StreamingSession.from_artifact("step-arm64")      # or .from_onnx("step.onnx")
    session.prime([12, 7, 301])                                 # an existing history
    top = session.push(88)                                      # -> TopK(items, scores)
    print(top.items[:3])

``push`` costs one position (one query row per block, one FFN row and the scoring). When
the cache is full (``max_len`` items) the next push re-primes it from the last ``keep``
items (``models.streaming.windows``): the default ``max_len // 2`` re-primes every
``max_len - keep`` pushes (at most 2 positions per push on average; the window holds
``keep + 1`` to ``max_len`` recent items); ``keep=max_len - 1`` keeps exactly the last
``max_len`` items, the training and evaluation window, at ``max_len`` positions per push
past ``max_len``. Scores always equal a full recompute over the window. Bad input raises one typed
error (``UnknownItem``, ``PositionOutOfRange``, ``CacheShapeMismatch``, ``NotStreaming``)
and leaves the cache as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dnsrec_edge.errors import (
    CacheShapeMismatch,
    InputFileError,
    NotStreaming,
    PositionOutOfRange,
    UnknownItem,
)

STREAMING_META = "dnsrec_edge.streaming"
DEFAULT_TOPK = 10


class TopK(NamedTuple):
    """The best items after a push: ids (k,) int64, best first, and their scores (k,)."""

    items: np.ndarray
    scores: np.ndarray


@dataclass
class StreamState:
    """A session's state, to save and restore: the window's items and the caches (numpy)."""

    items: list[int]  # the items the cache holds, oldest first (len == length)
    cache: list[np.ndarray]  # k_0, v_0, k_1, v_1, ... each (B, heads, max_len, head_dim)

    @property
    def length(self) -> int:
        return len(self.items)


class _OrtRunner:
    """The step graph under ONNX Runtime; the cache lives in numpy arrays."""

    def __init__(self, path: Path, threads: int | None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def upload(self, array: np.ndarray) -> Any:
        return np.ascontiguousarray(array)

    def download(self, value: Any) -> np.ndarray:
        return np.asarray(value)

    def run(self, args: list[Any]) -> list[Any]:
        return self.session.run(None, dict(zip(self.inputs, args, strict=True)))


class _TvmRunner:
    """The compiled step library under TVM's Relax VM; the cache stays on the device."""

    def __init__(self, module: Any, dev: Any, entry: str, n_outputs: int, rpc: bool = False):
        from tvm.runtime.vm import VirtualMachine  # runtime-only TVM installs have no relax

        self.dev, self.n_outputs, self.rpc = dev, n_outputs, rpc
        self.vm = VirtualMachine(module, dev)
        self.fn = self.vm[entry]
        self.entry = entry

    def upload(self, array: np.ndarray) -> Any:
        import tvm

        return tvm.runtime.tensor(np.ascontiguousarray(array), self.dev)

    def download(self, value: Any) -> np.ndarray:
        return value.numpy()

    def run(self, args: list[Any]) -> list[Any]:
        if self.rpc:  # a tuple returned over RPC is opaque: fetch its items one by one
            self.vm.set_input(self.entry, *args)
            self.vm.invoke_stateful(self.entry)
            return list(self.vm.get_outputs(self.entry))
        out = self.fn(*args)
        return [out[i] for i in range(self.n_outputs)]


class StreamingSession:
    """One user's stream over a step model: ``push(item_id) -> TopK``, ``prime(history)``."""

    def __init__(self, runner: Any, layout: dict, *, keep: int | None = None, topk: int = 10):
        self.runner, self.layout = runner, layout
        self.max_len = int(layout["max_len"])
        self.n_items = int(layout["n_items"])
        self.batch = int(layout["batch"])
        self.keep = (
            self.max_len // 2 if keep is None else int(keep)
        )  # models.streaming.default_keep
        if not 0 <= self.keep < self.max_len:
            raise PositionOutOfRange(
                f"keep {self.keep} is outside 0..{self.max_len - 1} (the cache holds "
                f"{self.max_len} positions); pass a smaller keep"
            )
        self.topk = max(1, min(int(topk), self.n_items))
        self._cache_spec = [(tuple(c["shape"]), c["dtype"]) for c in layout["cache"]]
        self.last_scores: np.ndarray | None = None  # (B, n_items) after the latest push
        self.reprimes = 0  # how many times the window was re-primed
        self.reset()

    # --- construction -----------------------------------------------------------------
    @classmethod
    def from_onnx(
        cls, path: str | Path, *, keep: int | None = None, topk: int = 10, threads: int | None = 1
    ) -> StreamingSession:
        """A session over an exported step graph (``export --streaming``) under ONNX Runtime."""
        import onnx

        path = Path(path)
        if not path.is_file():
            raise InputFileError(f"ONNX file '{path}' does not exist; export one with --streaming")
        proto = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
        layout = _layout(props.get(STREAMING_META), f"'{path}'")
        return cls(_OrtRunner(path, threads), layout, keep=keep, topk=topk)

    @classmethod
    def from_artifact(
        cls,
        artifact: Any,
        *,
        keep: int | None = None,
        topk: int = 10,
        threads: int | None = None,
        remote: Any = None,
    ) -> StreamingSession:
        """A session over a compiled streaming artifact (folder or ``Artifact``), on this
        machine's CPU, or on the board behind ``remote`` (a TVM RPC session)."""
        from dnsrec_edge.compile.artifact import Artifact, load_artifact, set_threads

        art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
        layout = _layout(art.manifest.get("streaming"), f"artifact '{art.path}'")
        entry = art.manifest.get("entry", "main")
        if remote is None:
            import tvm

            if not art.runs_here():
                art.load_vm()  # raises the one-sentence DeviceError naming the architectures
            if threads:
                set_threads(threads)
            module, dev = tvm.runtime.load_module(str(art.library)), tvm.cpu()
        else:
            name = f"dnsrec_{art.sha256[:16]}.so"
            remote.upload(str(art.library), name)
            module, dev = remote.load_module(name), remote.cpu()
        return cls.from_module(
            module, dev, layout, entry=entry, keep=keep, topk=topk, rpc=remote is not None
        )

    @classmethod
    def from_module(
        cls,
        module: Any,
        dev: Any,
        layout: dict,
        *,
        entry: str = "main",
        keep: int | None = None,
        topk: int = 10,
        rpc: bool = False,
    ) -> StreamingSession:
        """A session over an already loaded step library; ``rpc``: loaded through an RPC
        session (a board, or TVM's LocalSession)."""
        runner = _TvmRunner(module, dev, entry, len(layout["outputs"]), rpc)
        return cls(runner, layout, keep=keep, topk=topk)

    # --- state ------------------------------------------------------------------------
    @property
    def length(self) -> int:
        """Items in the cache (also the next item's position)."""
        return len(self._items)

    @property
    def items(self) -> list[int]:
        return list(self._items)

    def reset(self) -> None:
        """Forget the history: an empty cache."""
        self._cache = [self.runner.upload(np.zeros(s, dtype=d)) for s, d in self._cache_spec]
        self._items: list[int] = []
        self.last_scores = None

    def state(self) -> StreamState:
        """A copy of the window's items and the caches, e.g. to persist between app runs."""
        return StreamState(self.items, [self.runner.download(c).copy() for c in self._cache])

    def restore(self, state: StreamState) -> None:
        """Load a saved state; a bad one raises and leaves the session unchanged."""
        items = [self._check_item(i) for i in state.items]
        if len(items) > self.max_len:
            raise PositionOutOfRange(
                f"the state holds {len(items)} items, past the cache's {self.max_len} positions; "
                f"restore at most the last {self.max_len} (or prime() the history instead)"
            )
        cache = list(state.cache)
        if len(cache) != len(self._cache_spec):
            raise CacheShapeMismatch(
                f"the state holds {len(cache)} cache tensors but the step model takes "
                f"{len(self._cache_spec)} (k and v per block); save it from the same model"
            )
        for i, (array, (shape, dtype)) in enumerate(zip(cache, self._cache_spec, strict=True)):
            array = np.asarray(array)
            if tuple(array.shape) != shape or array.dtype != np.dtype(dtype):
                raise CacheShapeMismatch(
                    f"cache tensor {i} ({self.layout['cache'][i]['name']}) is {array.dtype} "
                    f"{list(array.shape)} but the step model takes {dtype} {list(shape)}; save "
                    "the state from the same model"
                )
        self._cache = [self.runner.upload(np.asarray(a)) for a in cache]
        self._items, self.last_scores = items, None

    # --- streaming --------------------------------------------------------------------
    def push(self, item_id: int) -> TopK:
        """Add one interaction and return the top-k next items (ids and scores)."""
        item = self._check_item(item_id)
        cache, items = self._cache, self._items
        if len(items) == self.max_len:  # full: re-prime from the last `keep` items
            kept = items[len(items) - self.keep :] if self.keep else []
            cache, items = self._fill(kept)
            self.reprimes += 1
        out = self._step(item, len(items), cache)
        self._cache, self._items = out[-len(cache) :], [*items, item]
        self.last_scores = self.runner.download(out[0])
        return self._top(out)

    def prime(self, history: Iterable[int]) -> TopK | None:
        """Start from ``history`` (oldest first; only its last ``max_len`` items count);
        return the top-k after its last item (None for an empty history)."""
        history = [self._check_item(i) for i in history]
        window = history[-self.max_len :]
        if not window:
            self.reset()
            return None
        cache, items = self._fill(window[:-1])
        out = self._step(window[-1], len(items), cache)
        self._cache, self._items = out[-len(cache) :], [*items, window[-1]]
        self.last_scores = self.runner.download(out[0])
        return self._top(out)

    def _fill(self, items: Sequence[int]) -> tuple[list[Any], list[int]]:
        cache = [self.runner.upload(np.zeros(s, dtype=d)) for s, d in self._cache_spec]
        for position, item in enumerate(items):
            cache = self._step(item, position, cache)[-len(cache) :]
        return cache, list(items)

    def _step(self, item: int, position: int, cache: list[Any]) -> list[Any]:
        if not 0 <= position < self.max_len:  # unreachable through push/prime: a guard
            raise PositionOutOfRange(
                f"position {position} is past the cache (0..{self.max_len - 1})"
            )
        item_t = self.runner.upload(np.full(self.batch, item, dtype=np.int64))
        pos_t = self.runner.upload(np.full(self.batch, position, dtype=np.int64))
        return self.runner.run([item_t, pos_t, *cache])

    def _top(self, out: list[Any]) -> TopK:
        if self.layout.get("topk") and self.topk <= int(self.layout["topk"]):
            items = self.runner.download(out[1])[0, : self.topk]
            scores = self.runner.download(out[2])[0, : self.topk]
            return TopK(items.astype(np.int64), scores)
        row = self.last_scores[0]
        idx = np.argpartition(-row, self.topk - 1)[: self.topk]
        idx = idx[np.argsort(-row[idx], kind="stable")]
        return TopK(idx.astype(np.int64) + 1, row[idx])

    def _check_item(self, item_id: Any) -> int:
        try:
            item = int(item_id)
            exact = item == item_id
        except (TypeError, ValueError):
            item, exact = -1, False
        if not exact or not 1 <= item <= self.n_items:
            raise UnknownItem(
                f"item id {item_id!r} is outside the catalogue 1..{self.n_items}; map it to a "
                "catalogue id (or skip it) before pushing"
            )
        return item


def _layout(text: Any, what: str) -> dict:
    """The streaming layout from ONNX metadata (JSON text) or a manifest (dict)."""
    if not text:
        raise NotStreaming(
            f"{what} is not a streaming step model; export one with `dnsrec-edge export "
            "CHECKPOINT -o step.onnx --streaming` (and compile that)"
        )
    layout = json.loads(text) if isinstance(text, str) else text
    if not isinstance(layout, dict) or layout.get("kind") != "step":
        raise NotStreaming(f"{what} holds no streaming step layout; re-export it with --streaming")
    return layout
