"""Build the compiled kernels in ext/ as extension modules of the feedengine package."""

import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

# ext/<name>.pyx becomes feedengine._<name>; feedtypes.pxd is the shared contract.
KERNELS = ["wire", "tickfile", "candles", "pgcopy", "angelone_wire"]

COMPILE_ARGS = ["-O3"] if os.name != "nt" else ["/O2"]

extensions = [
    Extension(
        f"feedengine._{name}",
        [f"ext/{name}.pyx"],
        include_dirs=["ext", numpy.get_include()],
        extra_compile_args=COMPILE_ARGS,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["ext"],
        compiler_directives={"language_level": 3, "embedsignature": True},
        quiet=True,
    ),
)
