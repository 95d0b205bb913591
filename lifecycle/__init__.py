"""The library behind the DVC stages: pure functions by lifecycle area.

sources (collect), contract and quality (validate), cleaning (preprocess), splitting (split),
features, models, evaluation, packaging, and later serving and monitoring. Stage scripts in
`stages/` stay thin: read params and inputs, call these, write outputs and metrics.
"""

import os as _os


def _pin_cpu_kernels() -> None:
    """The same fitted bytes on every x86-64 machine with AVX2 and FMA (nearly every server).

    OpenBLAS picks its kernels by CPU at load time (Haswell on this AMD EPYC, SkylakeX on an
    AVX-512 Intel, ...), and an lbfgs fit run on other kernels ends in other last bits: the
    scores match, but models/model.skops, and so dvc.lock, differ from machine to machine.
    So the kernels are chosen here, before numpy or scipy load OpenBLAS: the Haswell ones
    (AVX2 + FMA), and numpy's AVX-512 loops (whose exp/log round differently) are left out.
    Machines without AVX2 keep their own choice. LIFECYCLE_NATIVE_KERNELS=1 opts out."""
    if _os.environ.get("LIFECYCLE_NATIVE_KERNELS") == "1":
        return
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:  # not Linux: leave the libraries to choose
        return
    if {"avx2", "fma"} <= set(flags):
        _os.environ["OPENBLAS_CORETYPE"] = "Haswell"
        if "avx512f" in flags:  # only there is there anything to leave out
            _os.environ["NPY_DISABLE_CPU_FEATURES"] = "X86_V4"


_pin_cpu_kernels()
