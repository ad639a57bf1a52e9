"""Backends for the triton-kernel test suite (installed as a real distribution)."""
