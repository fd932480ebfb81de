"""A structural check of a relocatable ELF object before LLVM's loader sees it.

LLVM's runtime linker trusts the object it is given: a truncated file, a section or
relocation pointing past the end, or a symbol index out of range can crash the process
(this LLVM is built with assertions, which abort). Objects normally come from our own
code generator, but the disk cache hands back whatever the file holds, so before one is
loaded it must be an ELF64 little-endian relocatable object for this machine whose
sections, symbols and relocations stay inside the file, and which defines every
function the caller will look up. The check reads only headers and tables: a few
microseconds for a typical kernel.
"""
from __future__ import annotations

import struct
import sys

import llvmlite.binding as llvm
import numpy as np

ELF_MAGIC = b"\x7fELF"
ELFCLASS64, ELFDATA2LSB, ET_REL = 2, 1, 1
SHT_SYMTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 2, 4, 8, 9
SHF_EXECINSTR = 0x4
STB_GLOBAL, STT_FUNC = 1, 2
SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")   # name type flags addr offset size link info align entsize
_MACHINES = {"x86_64": 62, "aarch64": 183, "arm64": 183, "ppc64le": 21, "riscv64": 243}
_SYMBOL = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"), ("value", "<u8"),
                    ("size", "<u8")])
_RELA = np.dtype([("offset", "<u8"), ("info", "<u8"), ("addend", "<i8")])
_REL = np.dtype([("offset", "<u8"), ("info", "<u8")])


def applies() -> bool:
    """Objects are ELF on Linux (elsewhere the loader's own checks and the symbol lookup
    after loading are what guard)."""
    return sys.platform.startswith("linux")


def _host_machine() -> int | None:
    return _MACHINES.get(llvm.get_default_triple().split("-")[0])


def problem(data: bytes, symbols) -> str | None:
    """Why `data` is not a loadable object defining `symbols` (functions), or None."""
    if len(data) < 64 or data[:4] != ELF_MAGIC:
        return "not an ELF object"
    if data[4] != ELFCLASS64 or data[5] != ELFDATA2LSB:
        return "not a 64-bit little-endian ELF object"
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    machine = _host_machine()
    if e_type != ET_REL or (machine is not None and e_machine != machine):
        return f"an ELF object of type {e_type} for machine {e_machine}, not a relocatable object for this CPU"
    shoff, = struct.unpack_from("<Q", data, 40)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 58)
    if shentsize != SECTION_HEADER.size or shnum == 0 or shoff + shnum * shentsize > len(data):
        return "its section table lies outside the file"
    sections = [SECTION_HEADER.unpack_from(data, shoff + k * shentsize) for k in range(shnum)]
    for name, kind, _, _, offset, size, link, info, _, entsize in sections:
        if kind != SHT_NOBITS and offset + size > len(data):
            return "a section lies outside the file"
        if link >= shnum:
            return "a section links to a section that does not exist"
    if shstrndx >= shnum:
        return "its section-name table does not exist"
    symtabs = [k for k, s in enumerate(sections) if s[1] == SHT_SYMTAB]
    if len(symtabs) != 1:
        return "it has no symbol table"
    symtab = sections[symtabs[0]]
    if symtab[9] != _SYMBOL.itemsize or symtab[5] % _SYMBOL.itemsize:
        return "its symbol table is malformed"
    table = np.frombuffer(data, _SYMBOL, symtab[5] // _SYMBOL.itemsize, symtab[4])
    strtab = sections[symtab[6]]
    strings = data[strtab[4]:strtab[4] + strtab[5]]
    if len(table) and (int(table["name"].max()) >= max(len(strings), 1)
                       or int(table["shndx"][(table["shndx"] < 0xFF00)].max(initial=0)) >= shnum):
        return "a symbol names a string or section that does not exist"
    for kind, dtype in ((SHT_RELA, _RELA), (SHT_REL, _REL)):
        for s in (s for s in sections if s[1] == kind):
            if s[9] != dtype.itemsize or s[5] % dtype.itemsize or s[7] >= shnum or s[6] != symtabs[0]:
                return "a relocation table is malformed"
            relocations = np.frombuffer(data, dtype, s[5] // dtype.itemsize, s[4])
            target = sections[s[7]]
            if len(relocations) and (int((relocations["info"] >> 32).max()) >= len(table)
                                     or int(relocations["offset"].max()) >= max(target[5], 1)):
                return "a relocation points outside its section or symbol table"
    defined = {}
    for entry in table:
        if entry["info"] >> 4 == STB_GLOBAL and entry["info"] & 0xF == STT_FUNC and 0 < entry["shndx"] < shnum:
            end = strings.find(b"\0", int(entry["name"]))
            defined[strings[int(entry["name"]):end if end >= 0 else None].decode(errors="replace")] = entry
    for symbol in symbols:
        entry = defined.get(symbol)
        if entry is None:
            return f"it does not define {symbol}"
        section = sections[int(entry["shndx"])]
        if not section[2] & SHF_EXECINSTR or int(entry["value"]) >= max(section[5], 1):
            return f"{symbol} does not point into code"
    return None
