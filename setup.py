"""Build the compiled kernels in ext/ as extension modules of the feedengine package."""

import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

# Module: source. feedtypes.pxd is the shared contract; each broker's decoder lives in its
# package (``feedengine.brokers.<broker>._wire``).
KERNELS = {
    "feedengine._tickfile": "ext/tickfile.pyx",
    "feedengine._candles": "ext/candles.pyx",
    "feedengine._pgcopy": "ext/pgcopy.pyx",
    "feedengine.brokers.kite._wire": "ext/kite/_wire.pyx",
    "feedengine.brokers.angelone._wire": "ext/angelone/_wire.pyx",
}

COMPILE_ARGS = ["-O3"] if os.name != "nt" else ["/O2"]

extensions = [
    Extension(
        name,
        [source],
        include_dirs=["ext", numpy.get_include()],
        depends=glob.glob("ext/*.h"),
        extra_compile_args=COMPILE_ARGS,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name, source in KERNELS.items()
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["ext"],
        compiler_directives={"language_level": 3, "embedsignature": True},
        quiet=True,
    ),
)
