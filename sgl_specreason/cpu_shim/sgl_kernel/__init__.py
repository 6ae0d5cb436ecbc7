"""Stand-in for the CUDA-only ``sgl_kernel`` package, for SGLang servers on CPUs without AMX.

SGLang's CPU path imports a few names from ``sgl_kernel`` when its modules load, but on a CPU
without AMX it runs its torch-native attention and never calls them. The real wheel cannot even
be imported without ``libcuda.so.1``. This module is put first on the *server's* PYTHONPATH
only (never in the client): every attribute resolves to a function that raises a clear error
if it is ever called, so a code path that truly needs the kernels fails loudly, not silently.
"""

__version__ = "0.0.0+cpu-shim"


class KernelUnavailableError(RuntimeError):
    pass


def _unavailable(name: str):
    def call(*args, **kwargs):
        raise KernelUnavailableError(
            f"sgl_kernel.{name} was called, but this SGLang server runs with the CPU stand-in "
            "for sgl_kernel (no CUDA, no AMX). Serve on a GPU, or on a CPU with AMX and the "
            "real sgl_kernel CPU build."
        )

    call.__name__ = name
    return call


def __getattr__(name: str):
    if name.startswith("_"):
        raise AttributeError(name)
    return _unavailable(name)
