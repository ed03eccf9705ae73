"""Build of the Cython kernels: the same source compiled once per instruction set.

_cy_avx512, _cy_avx2 and _cy_generic are kernels/cy_impl.pxi under different
-m flags; fastlstm picks the best one the CPU supports at import, so the wheel
runs on any x86-64 machine.  OpenMP is used when the compiler supports it
(FASTLSTM_NO_OPENMP=1 builds without it; the kernels then run one thread).
FASTLSTM_DEBUG_BOUNDS=1 turns Cython's bounds checking back on.
"""

import os
import platform
import shutil
import subprocess
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ISA_FLAGS = {
    "_cy_avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"],
    "_cy_avx2": ["-mavx2", "-mfma", "-mf16c"],
    "_cy_generic": [],
}
COMMON_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-Wno-unused-function", "-Wno-psabi",
                "-Wno-maybe-uninitialized"]

DEBUG = os.environ.get("FASTLSTM_DEBUG_BOUNDS") == "1"
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": DEBUG,
}


def _compiler_accepts(compiler, flags, source):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as handle:
            handle.write(source)
        try:
            objects = compiler.compile([path], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=flags)
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    def build_extensions(self):
        openmp = os.environ.get("FASTLSTM_NO_OPENMP") != "1" and _compiler_accepts(
            self.compiler, ["-fopenmp"], "#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        kept = []
        for ext in self.extensions:
            isa = ISA_FLAGS[ext.name.rsplit(".", 1)[-1]]
            if isa and not _compiler_accepts(self.compiler, isa, "int main(void){return 0;}\n"):
                continue  # not an x86-64 compiler, or too old for these flags
            ext.extra_compile_args = COMMON_FLAGS + isa + (["-fopenmp"] if openmp else [])
            ext.extra_link_args = ["-fopenmp"] if openmp else []
            kept.append(ext)
        self.extensions = kept
        if not self.parallel:
            self.parallel = os.cpu_count() or 1  # the three builds are independent
        super().build_extensions()


def extensions():
    from Cython.Build import cythonize

    names = ISA_FLAGS if platform.machine().lower() in ("x86_64", "amd64") else ["_cy_generic"]
    import numpy

    # numpy's C API: SequencePlan.run reads its arrays without typed memoryviews
    modules = [Extension(f"fastlstm.kernels.{name}", [f"kernels/{name}.pyx"],
                         include_dirs=["kernels", numpy.get_include()],
                         define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])
               for name in names]
    return cythonize(modules, compiler_directives=DIRECTIVES, include_path=["kernels"])


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
