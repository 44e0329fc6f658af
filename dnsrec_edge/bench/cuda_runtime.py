"""TVM's CUDA runtime in this process: board-side (no torch, no compiler), used by ``device
serve`` and by local benchmarks of CUDA artifacts."""

from __future__ import annotations

from pathlib import Path


def load_cuda_runtime() -> bool:
    """Make TVM's CUDA device usable in this process; False if this install or machine lacks it.

    TVM registers its CUDA runtime (``libtvm_runtime_cuda.so``, beside ``libtvm_runtime.so``)
    lazily, and a runtime-only install (``TVM_USE_RUNTIME_LIB=1``, as on boards) never does:
    this loads it when it is there and the NVIDIA driver can be found. TVM 0.27 stores CUDA
    kernels as source that NVRTC compiles when the library loads; a runtime-only install
    cannot ask its compiler for the GPU architecture, so the kernels are compiled for the
    GPU this process sees (device 0).
    """
    import ctypes

    import tvm
    from tvm import base

    if tvm.get_global_func("device_api.cuda", allow_missing=True) is None:
        runtime_dir = Path(base._LOADED_LIBS["tvm_runtime"]._name).resolve().parent
        try:
            ctypes.CDLL(str(runtime_dir / "libtvm_runtime_cuda.so"), mode=ctypes.RTLD_LOCAL)
        except OSError:
            return False
    if tvm.get_global_func("device_api.cuda", allow_missing=True) is None:
        return False
    if base._RUNTIME_ONLY and tvm.cuda(0).exist:
        import tvm_ffi
        from tvm.support.nvcc import compile_cuda

        arch = "sm_" + tvm.cuda(0).compute_version.replace(".", "")

        @tvm_ffi.register_global_func("tvm_callback_cuda_compile", override=True)
        def _compile(code: str) -> bytes:
            return compile_cuda(code, target_format="cubin", compiler="nvrtc", arch=arch)

    return True
