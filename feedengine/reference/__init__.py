"""Plain-Python reference implementations of every compiled kernel.

They are written for clarity, not speed: the tests check each Cython kernel against its
reference on random, adversarial and real input.
"""
