"""A structural check of a relocatable ELF object before LLVM's loader sees it.

LLVM's runtime linker trusts the object it is given: a truncated file, a section or
relocation pointing past the end, or a symbol index out of range can crash the process
(this LLVM is built with assertions, which abort). Objects normally come from our own
code generator, but the disk cache hands back whatever the file holds, so before one is
loaded it must be an ELF64 little-endian relocatable object for this machine whose
sections, symbols and relocations stay inside the file, and which defines every
function the caller will look up, and its symbols and relocations must be of the kinds
our code generator produces. The check reads only headers and tables (a fraction of a
millisecond, against milliseconds for loading). It does not judge the code itself:
that an entry holds what this process wrote is the cache's HMAC's job (`cache.py`).
"""
from __future__ import annotations

import struct
import sys

import llvmlite.binding as llvm
import numpy as np

ELF_MAGIC = b"\x7fELF"
ELFCLASS64, ELFDATA2LSB, ET_REL = 2, 1, 1
SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 2, 3, 4, 8, 9
SHF_EXECINSTR = 0x4
STB_GLOBAL, STT_FUNC = 1, 2
SHN_ABS = 0xFFF1
MAX_SECTION_BYTES = 1 << 30
X86_64_RELOCATIONS = (1, 2, 4, 9, 10, 11, 24, 41, 42)   # 64, PC32, PLT32, GOTPCREL, 32, 32S, PC64, GOTPCRELX
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


class _Malformed(Exception):
    """Why an object is refused."""


def problem(data: bytes, symbols) -> str | None:
    """Why `data` is not a loadable object defining `symbols` (functions), or None."""
    try:
        sections = _sections(data)
        symtab_index, table, strings = _symbol_table(data, sections)
        _check_relocations(data, sections, symtab_index, len(table))
        _check_defines(sections, table, strings, symbols)
    except _Malformed as reason:
        return str(reason)
    return None


def _sections(data: bytes) -> list[tuple]:
    """The section headers, after checking the ELF header and that every section lies in
    the file, links to an existing section, is aligned to a power of two and is named
    inside a null-terminated name table."""
    if len(data) < 64 or data[:4] != ELF_MAGIC:
        raise _Malformed("not an ELF object")
    if data[4] != ELFCLASS64 or data[5] != ELFDATA2LSB:
        raise _Malformed("not a 64-bit little-endian ELF object")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    machine = _host_machine()
    if e_type != ET_REL or (machine is not None and e_machine != machine):
        raise _Malformed(f"an ELF object of type {e_type} for machine {e_machine}, not a relocatable object "
                         "for this CPU")
    shoff, = struct.unpack_from("<Q", data, 40)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 58)
    if shentsize != SECTION_HEADER.size or shnum == 0 or shoff + shnum * shentsize > len(data):
        raise _Malformed("its section table lies outside the file")
    sections = [SECTION_HEADER.unpack_from(data, shoff + k * shentsize) for k in range(shnum)]
    for name, kind, _, _, offset, size, link, info, align, entsize in sections:
        if kind != SHT_NOBITS and offset + size > len(data) or size > MAX_SECTION_BYTES:
            raise _Malformed("a section lies outside the file")
        if link >= shnum:
            raise _Malformed("a section links to a section that does not exist")
        if align & (align - 1) or align > MAX_SECTION_BYTES:
            raise _Malformed("a section has an alignment that is not a power of two")
        if kind == SHT_STRTAB and (size == 0 or data[offset + size - 1] != 0):
            raise _Malformed("a string table does not end in a null byte")
    if shstrndx >= shnum or sections[shstrndx][1] != SHT_STRTAB:
        raise _Malformed("its section-name table does not exist")
    if any(s[0] >= sections[shstrndx][5] for s in sections):
        raise _Malformed("a section's name lies outside the section-name table")
    return sections


def _symbol_table(data: bytes, sections: list[tuple]):
    """(index of the symbol table, its entries, its string table), after checking that
    each symbol is of a kind the code generator produces, is named inside the string
    table and points inside its section."""
    symtabs = [k for k, s in enumerate(sections) if s[1] == SHT_SYMTAB]
    if len(symtabs) != 1:
        raise _Malformed("it has no symbol table")
    symtab = sections[symtabs[0]]
    if symtab[9] != _SYMBOL.itemsize or symtab[5] % _SYMBOL.itemsize:
        raise _Malformed("its symbol table is malformed")
    table = np.frombuffer(data, _SYMBOL, symtab[5] // _SYMBOL.itemsize, symtab[4])
    strtab = sections[symtab[6]]
    if strtab[1] != SHT_STRTAB:
        raise _Malformed("its symbol table has no string table")
    strings = data[strtab[4]:strtab[4] + strtab[5]]
    shndx, info = table["shndx"], table["info"]
    special = shndx >= 0xFF00
    if np.any(special & (shndx != SHN_ABS)) or np.any((info & 0xF) > 4) or np.any((info >> 4) > 2):
        raise _Malformed("a symbol has a kind that code generation does not produce")
    if len(table) and (int(table["name"].max()) >= len(strings) or int(shndx[~special].max(initial=0)) >= len(sections)):
        raise _Malformed("a symbol names a string or section that does not exist")
    defined = (shndx > 0) & ~special
    sizes = np.array([s[5] for s in sections], np.uint64)
    if np.any(table["value"][defined] > sizes[shndx[defined].astype(np.intp)]):
        raise _Malformed("a symbol points outside its section")
    return symtabs[0], table, strings


def _check_relocations(data: bytes, sections: list[tuple], symtab_index: int, n_symbols: int) -> None:
    """Every relocation names an existing symbol, lands inside its section, and is of a
    type and addend the code generator produces (the loader asserts on anything else)."""
    x86_64 = _host_machine() == _MACHINES["x86_64"]
    for kind, dtype in ((SHT_RELA, _RELA), (SHT_REL, _REL)):
        for s in (s for s in sections if s[1] == kind):
            if s[9] != dtype.itemsize or s[5] % dtype.itemsize or s[7] >= len(sections) or s[6] != symtab_index:
                raise _Malformed("a relocation table is malformed")
            relocations = np.frombuffer(data, dtype, s[5] // dtype.itemsize, s[4])
            if not len(relocations):
                continue
            if int((relocations["info"] >> 32).max()) >= n_symbols \
                    or int(relocations["offset"].max()) >= max(sections[s[7]][5], 1):
                raise _Malformed("a relocation points outside its section or symbol table")
            if x86_64 and not np.isin(relocations["info"] & 0xFFFFFFFF, X86_64_RELOCATIONS).all():
                raise _Malformed("a relocation has a type that code generation does not produce")
            if kind == SHT_RELA and int(np.abs(relocations["addend"]).max()) > MAX_SECTION_BYTES:
                raise _Malformed("a relocation addend is out of range")


def _check_defines(sections: list[tuple], table, strings: bytes, symbols) -> None:
    """Each of `symbols` is a global function defined inside a code section."""
    defined = {}
    for entry in table:
        if entry["info"] >> 4 == STB_GLOBAL and entry["info"] & 0xF == STT_FUNC and 0 < entry["shndx"] < len(sections):
            start = int(entry["name"])
            defined[strings[start:strings.index(b"\0", start)].decode(errors="replace")] = entry
    for symbol in symbols:
        entry = defined.get(symbol)
        if entry is None:
            raise _Malformed(f"it does not define {symbol}")
        section = sections[int(entry["shndx"])]
        if not section[2] & SHF_EXECINSTR or int(entry["value"]) >= max(section[5], 1):
            raise _Malformed(f"{symbol} does not point into code")
