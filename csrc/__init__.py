"""CUDA C++ sources of diffcut-gpu, shipped as package data and compiled at run time by CuPy (NVRTC)."""
