"""Running CUDA executables through cuda-python's driver API (`cuda.bindings.driver`).

Only this module touches a GPU, and only when a compiled function for device "cuda" is
called. Without cuda-python, a driver or a device it raises `NoCUDADeviceError`.

- Context: the device's primary context (device 0), current on the calling thread.
- Module: the PTX of the highest compiled architecture the device runs, linked by
  nvJitLink into a cubin for the device's own architecture and kept in the disk cache
  (cubin_cache.py: keyed by PTX, architecture, driver and linker versions, HMAC-checked);
  without nvJitLink the PTX itself is loaded and the driver compiles it.
- Launch configuration: parallel launches get the block size the occupancy calculator
  proposes (`cuOccupancyMaxPotentialBlockSize`) and as many blocks as fill the device, at
  most one thread per item (the grid-stride loops do the rest); single-thread launches
  get one thread.
- Memory: a caching allocator (freed blocks are kept by size, per device) for the
  workspace, NumPy inputs and the outputs; inputs exposing `__cuda_array_interface__`
  (CuPy, PyTorch, Numba) or DLPack on a CUDA device are read in place, without a copy;
  NumPy inputs are copied in; outputs are copied out to NumPy arrays.
- Launches go in order to one stream, so each sees what the previous ones wrote.
"""
from __future__ import annotations

import ctypes
import threading
from typing import Sequence

import numpy as np

from . import cubin_cache
from . import ptx as ptx_tools
from .errors import NoCUDADeviceError, PTXToolError

_lock = threading.Lock()
_device = None


def _check(result, what: str):
    """cuda-python returns (error, values...): the values, or an exception naming the call."""
    from cuda.bindings import driver
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != driver.CUresult.CUDA_SUCCESS:
        _, name = driver.cuGetErrorName(err)
        raise RuntimeError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else tuple(values)


class Device:
    """Device 0's primary context and its caching allocator."""

    def __init__(self):
        from cuda.bindings import driver
        self.driver = driver
        _check(driver.cuInit(0), "cuInit")
        if _check(driver.cuDeviceGetCount(), "cuDeviceGetCount") == 0:
            raise NoCUDADeviceError("no CUDA device: the driver reports none")
        self.device = _check(driver.cuDeviceGet(0), "cuDeviceGet")
        self.context = _check(driver.cuDevicePrimaryCtxRetain(self.device), "cuDevicePrimaryCtxRetain")
        attr = driver.CUdevice_attribute
        major = _check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, self.device), "")
        minor = _check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, self.device), "")
        self.arch = major * 10 + minor
        self.name = _check(driver.cuDeviceGetName(100, self.device), "cuDeviceGetName").split(b"\0")[0].decode()
        self.driver_version = int(_check(driver.cuDriverGetVersion(), "cuDriverGetVersion"))
        self._free: dict[int, list[int]] = {}
        self._alloc_lock = threading.Lock()

    def make_current(self) -> None:
        _check(self.driver.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")

    # ----- caching allocator
    @staticmethod
    def _bucket(nbytes: int) -> int:
        return max(256, 1 << (max(nbytes, 1) - 1).bit_length())

    def allocate(self, nbytes: int) -> int:
        size = self._bucket(nbytes)
        with self._alloc_lock:
            cached = self._free.get(size)
            if cached:
                return cached.pop()
        return int(_check(self.driver.cuMemAlloc(size), "cuMemAlloc"))

    def release(self, pointer: int, nbytes: int) -> None:
        with self._alloc_lock:
            self._free.setdefault(self._bucket(nbytes), []).append(pointer)


def device() -> Device:
    """The process's CUDA device, or NoCUDADeviceError saying why there is none."""
    global _device
    with _lock:
        if _device is None:
            try:
                _device = Device()
            except NoCUDADeviceError:
                raise
            except ImportError as err:
                raise NoCUDADeviceError(f"no CUDA device: cuda-python is not installed ({err}); "
                                        "pip install cuda-bindings") from None
            except Exception as err:        # no libcuda, no device, driver too old
                raise NoCUDADeviceError(f"no CUDA device: {err}") from None
        _device.make_current()
        return _device


def available() -> tuple[bool, str]:
    """(True, device description) or (False, why not)."""
    try:
        d = device()
    except NoCUDADeviceError as err:
        return False, str(err)
    return True, f"{d.name} (sm_{d.arch})"


def device_pointer(x, dtype: np.dtype, shape) -> int | None:
    """The device address of a CUDA array given as input (C-contiguous, of exactly the
    compiled dtype and shape), or None for anything else (it is copied in from the host)."""
    interface = getattr(x, "__cuda_array_interface__", None)
    if interface is not None:
        if np.dtype(interface["typestr"]) != dtype or tuple(interface["shape"]) != tuple(shape):
            raise TypeError(f"a CUDA array of {interface['typestr']}{list(interface['shape'])} where "
                            f"{dtype}{list(shape)} was compiled")
        strides = interface.get("strides")
        if strides is not None and tuple(strides) != tuple(np.empty(shape, dtype).strides):
            raise TypeError("a non-contiguous CUDA array: pass a contiguous copy")
        return int(interface["data"][0])
    if hasattr(x, "__dlpack_device__") and not isinstance(x, np.ndarray):
        kind, _ = x.__dlpack_device__()
        if kind == 2:          # kDLCUDA
            return _dlpack_pointer(x, dtype, shape)
    return None


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32),
                ("ndim", ctypes.c_int32), ("code", ctypes.c_uint8), ("bits", ctypes.c_uint8),
                ("lanes", ctypes.c_uint16), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


def _dlpack_pointer(x, dtype: np.dtype, shape) -> int:
    capsule = x.__dlpack__()
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    tensor = _DLTensor.from_address(get(capsule, b"dltensor"))
    dims = tuple(tensor.shape[k] for k in range(tensor.ndim))
    if dims != tuple(shape) or tensor.bits != dtype.itemsize * 8:
        raise TypeError(f"a DLPack array of shape {dims} and {tensor.bits}-bit items where {dtype}{list(shape)} "
                        "was compiled")
    if tensor.strides:
        expected = np.empty(shape, dtype).strides
        if any(tensor.strides[k] * dtype.itemsize != expected[k] for k in range(tensor.ndim) if shape[k] > 1):
            raise TypeError("a non-contiguous DLPack array: pass a contiguous copy")
    return int(tensor.data) + int(tensor.byte_offset)


def module_image(ptx: str, arch: str, driver_version: int) -> bytes:
    """What `cuModuleLoadData` loads: the cubin for the device's architecture, from the
    disk cache or linked by nvJitLink (cubin_cache.py); the PTX itself, which the driver
    compiles, where nvJitLink is not installed or cannot link for this architecture."""
    if ptx_tools.nvjitlink_available():
        try:
            return cubin_cache.cubin_for(ptx, arch, driver_version)
        except PTXToolError:
            pass
    return ptx.encode() + b"\0"


class LoadedModule:
    """An executable's kernels loaded on the device, with its constants uploaded."""

    def __init__(self, executable):
        self.dev = device()
        driver = self.driver = self.dev.driver
        archs = sorted((int(a[3:]), a) for a in executable.ptx if int(a[3:]) <= self.dev.arch)
        if not archs:
            raise NoCUDADeviceError(f"no CUDA device this code runs on: compiled for {', '.join(executable.ptx)}, "
                                    f"the device is sm_{self.dev.arch}")
        image = module_image(executable.ptx[archs[-1][1]], f"sm_{self.dev.arch}", self.dev.driver_version)
        self.module = _check(driver.cuModuleLoadData(image), "cuModuleLoadData")
        self.stream = _check(driver.cuStreamCreate(0), "cuStreamCreate")
        self.launches = []
        sms = _check(driver.cuDeviceGetAttribute(
            driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, self.dev.device), "")
        for launch in executable.launches:
            function = _check(driver.cuModuleGetFunction(self.module, launch.name.encode()), "cuModuleGetFunction")
            if launch.parallel:
                min_grid, block = _check(driver.cuOccupancyMaxPotentialBlockSize(function, None, 0, 0),
                                         "cuOccupancyMaxPotentialBlockSize")
                grid = max(1, min(-(-launch.items // block), max(min_grid, sms)))
            else:
                grid, block = 1, 1
            self.launches.append((function, grid, block))
        self.constants = [self._upload(c) for c in executable.constants]
        self.workspace_bytes = executable.workspace_bytes
        self.in_specs = [(t.shape, t.dtype.numpy) for t in executable.function.input_types]
        self.out_specs = [(t.shape, t.dtype.numpy) for t in executable.function.output_types]

    def _upload(self, array: np.ndarray) -> int:
        pointer = self.dev.allocate(array.nbytes)
        if array.nbytes:
            _check(self.driver.cuMemcpyHtoD(pointer, array.ctypes.data, array.nbytes), "cuMemcpyHtoD")
        return pointer

    def run(self, inputs: Sequence) -> list[np.ndarray]:
        driver, dev = self.driver, self.dev
        dev.make_current()
        temporary: list[tuple[int, int]] = []
        try:
            pointers = []
            for x, (shape, dtype) in zip(inputs, self.in_specs, strict=True):
                pointer = device_pointer(x, np.dtype(dtype), shape)
                if pointer is None:
                    host = np.ascontiguousarray(x, dtype=dtype)
                    pointer = dev.allocate(host.nbytes)
                    temporary.append((pointer, host.nbytes))
                    if host.nbytes:
                        _check(driver.cuMemcpyHtoDAsync(pointer, host.ctypes.data, host.nbytes, self.stream), "copy in")
                pointers.append(pointer)
            outputs = [np.empty(shape, dtype) for shape, dtype in self.out_specs]
            out_pointers = []
            for o in outputs:
                pointer = dev.allocate(o.nbytes)
                temporary.append((pointer, o.nbytes))
                out_pointers.append(pointer)
            workspace = dev.allocate(self.workspace_bytes)
            temporary.append((workspace, self.workspace_bytes))
            table = np.array([*pointers, *out_pointers, workspace, *self.constants], dtype=np.uint64)
            table_pointer = dev.allocate(table.nbytes)
            temporary.append((table_pointer, table.nbytes))
            _check(driver.cuMemcpyHtoDAsync(table_pointer, table.ctypes.data, table.nbytes, self.stream), "copy in")
            for function, grid, block in self.launches:
                _check(driver.cuLaunchKernel(function, grid, 1, 1, block, 1, 1, 0, self.stream,
                                             ((table_pointer,), (ctypes.c_void_p,)), 0), "cuLaunchKernel")
            for o, pointer in zip(outputs, out_pointers):
                if o.nbytes:
                    _check(driver.cuMemcpyDtoHAsync(o.ctypes.data, pointer, o.nbytes, self.stream), "copy out")
            _check(driver.cuStreamSynchronize(self.stream), "cuStreamSynchronize")
            return outputs
        finally:
            driver.cuStreamSynchronize(self.stream)     # nothing queued still uses what is released
            for pointer, nbytes in temporary:
                dev.release(pointer, nbytes)


def time_launches(executable, inputs: Sequence, repeats: int = 10) -> float:
    """Median seconds of the launches alone (CUDA events around them; inputs, outputs and
    workspace stay on the device between repeats): what bandwidth figures divide by."""
    if executable._module is None:
        executable._module = load(executable)
    module = executable._module
    driver, dev = module.driver, module.dev
    dev.make_current()
    hosts = [np.ascontiguousarray(x, dtype=d) for x, (_, d) in zip(inputs, module.in_specs, strict=True)]
    buffers = [(dev.allocate(h.nbytes), h.nbytes) for h in hosts]
    buffers += [(dev.allocate(int(np.prod(shape)) * np.dtype(d).itemsize), int(np.prod(shape)) * np.dtype(d).itemsize)
                for shape, d in module.out_specs]
    workspace = dev.allocate(module.workspace_bytes)
    table = np.array([p for p, _ in buffers] + [workspace, *module.constants], dtype=np.uint64)
    table_pointer = dev.allocate(table.nbytes)
    try:
        for (pointer, nbytes), h in zip(buffers, hosts):
            if nbytes:
                _check(driver.cuMemcpyHtoD(pointer, h.ctypes.data, nbytes), "copy in")
        _check(driver.cuMemcpyHtoD(table_pointer, table.ctypes.data, table.nbytes), "copy in")
        start, stop = (_check(driver.cuEventCreate(0), "cuEventCreate") for _ in range(2))
        times = []
        for _ in range(repeats + 1):
            _check(driver.cuEventRecord(start, module.stream), "cuEventRecord")
            for function, grid, block in module.launches:
                _check(driver.cuLaunchKernel(function, grid, 1, 1, block, 1, 1, 0, module.stream,
                                             ((table_pointer,), (ctypes.c_void_p,)), 0), "cuLaunchKernel")
            _check(driver.cuEventRecord(stop, module.stream), "cuEventRecord")
            _check(driver.cuEventSynchronize(stop), "cuEventSynchronize")
            times.append(_check(driver.cuEventElapsedTime(start, stop), "cuEventElapsedTime") / 1e3)
        return float(np.median(times[1:]))
    finally:
        driver.cuStreamSynchronize(module.stream)
        for pointer, nbytes in buffers + [(workspace, module.workspace_bytes), (table_pointer, table.nbytes)]:
            dev.release(pointer, nbytes)


def peak_bandwidth() -> float:
    """The device's memory bandwidth in bytes/s: memory clock (kHz) x 2 (double data
    rate) x bus width (bits) / 8."""
    dev = device()
    attr = dev.driver.CUdevice_attribute
    clock = _check(dev.driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE, dev.device), "")
    width = _check(dev.driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH, dev.device), "")
    return clock * 1e3 * 2 * width / 8


def load(executable) -> LoadedModule:
    return LoadedModule(executable)
