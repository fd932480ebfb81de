"""The CUDA backend: the kernel layer's code lowered to PTX (libdevice for math), and a
grid emulator running the same kernels on the host (see docs/gpu.md)."""
