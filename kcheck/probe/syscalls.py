"""Thin ctypes wrappers for the syscalls the live probes need; each raises OSError."""

from __future__ import annotations

import ctypes
import errno
import os
from functools import cache

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PROT_READ = 1
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 0x01, 0x02, 0x20
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PROT_WRITE = 2
IOCB_CMD_PREAD = 0
MAP_FAILED = ctypes.c_void_p(-1).value

# io_setup, io_destroy, io_getevents, io_submit by architecture (asm-generic for arm64/riscv).
_AIO_SYSCALLS = {
    "x86_64": (206, 207, 208, 209),
    "aarch64": (0, 1, 4, 2),
    "riscv64": (0, 1, 4, 2),
    "ppc64le": (227, 228, 229, 230),
    "s390x": (243, 244, 245, 246),
}


@cache
def libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    lib.mmap.restype = ctypes.c_void_p
    lib.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    lib.mremap.restype = ctypes.c_void_p
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return lib


def _raise(what: str) -> None:
    code = ctypes.get_errno()
    raise OSError(code, f"{what}: {os.strerror(code)}")


def errno_name(code: int | None) -> str | None:
    return None if code is None else errno.errorcode.get(code, str(code))


def unshare(flags: int) -> None:
    if libc().unshare(flags) != 0:
        _raise("unshare")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    if libc().mount(enc[0], enc[1], enc[2], flags, enc[3]) != 0:
        _raise(f"mount {fstype or ''} on {target}")


def set_parent_death_signal(signal_number: int) -> None:
    libc().prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0)


def mmap(length: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
    address = libc().mmap(None, length, prot, flags, fd, offset)
    if address is None or address == MAP_FAILED:
        _raise("mmap")
    return address


def mremap_fixed(old: int, length: int, new: int) -> int:
    address = libc().mremap(
        ctypes.c_void_p(old),
        ctypes.c_size_t(length),
        ctypes.c_size_t(length),
        ctypes.c_int(MREMAP_MAYMOVE | MREMAP_FIXED),
        ctypes.c_void_p(new),
    )
    if address is None or address == MAP_FAILED:
        _raise("mremap")
    return address


def _aio_numbers() -> tuple[int, int, int, int]:
    machine = os.uname().machine
    if machine not in _AIO_SYSCALLS:
        raise OSError(errno.ENOSYS, f"no AIO syscall numbers known for {machine}")
    return _AIO_SYSCALLS[machine]


def io_setup(nr_events: int) -> int:
    context = ctypes.c_ulong(0)
    if libc().syscall(ctypes.c_long(_aio_numbers()[0]), ctypes.c_long(nr_events), ctypes.byref(context)) != 0:
        _raise("io_setup")
    return context.value


def io_destroy(context: int) -> None:
    if libc().syscall(ctypes.c_long(_aio_numbers()[1]), ctypes.c_ulong(context)) != 0:
        _raise("io_destroy")


def io_getevents_probe(context: int) -> tuple[int, int | None]:
    """io_getevents(ctx, 0, 1, NULL, NULL): returns (result, errno or None)."""
    result = libc().syscall(
        ctypes.c_long(_aio_numbers()[2]),
        ctypes.c_ulong(context),
        ctypes.c_long(0),
        ctypes.c_long(1),
        None,
        None,
    )
    return (int(result), ctypes.get_errno() if result < 0 else None)


def set_child_subreaper(enable: bool = True) -> None:
    """Orphans in our subtree (a tree criu restored with -d) become our children to reap."""
    if libc().prctl(PR_SET_CHILD_SUBREAPER, int(enable), 0, 0, 0) != 0:
        _raise("prctl(PR_SET_CHILD_SUBREAPER)")


class _Iocb(ctypes.Structure):
    """struct iocb (little-endian layout: aio_key before aio_rw_flags)."""

    _fields_ = [
        ("aio_data", ctypes.c_uint64),
        ("aio_key", ctypes.c_uint32),
        ("aio_rw_flags", ctypes.c_int32),
        ("aio_lio_opcode", ctypes.c_uint16),
        ("aio_reqprio", ctypes.c_int16),
        ("aio_fildes", ctypes.c_uint32),
        ("aio_buf", ctypes.c_uint64),
        ("aio_nbytes", ctypes.c_uint64),
        ("aio_offset", ctypes.c_int64),
        ("aio_reserved2", ctypes.c_uint64),
        ("aio_flags", ctypes.c_uint32),
        ("aio_resfd", ctypes.c_uint32),
    ]


class _IoEvent(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_uint64),
        ("obj", ctypes.c_uint64),
        ("res", ctypes.c_int64),
        ("res2", ctypes.c_int64),
    ]


def io_submit_pread(context: int, fd: int, buffer: int, length: int) -> None:
    """Queue one read of `length` bytes at offset 0 into `buffer`."""
    iocb = _Iocb(aio_lio_opcode=IOCB_CMD_PREAD, aio_fildes=fd, aio_buf=buffer, aio_nbytes=length)
    pointers = (ctypes.POINTER(_Iocb) * 1)(ctypes.pointer(iocb))
    if (
        libc().syscall(ctypes.c_long(_aio_numbers()[3]), ctypes.c_ulong(context), ctypes.c_long(1), pointers)
        != 1
    ):
        _raise("io_submit")


def io_getevents_results(context: int, wanted: int) -> list[int]:
    """Reap up to `wanted` completed events without waiting; each event's result."""
    events = (_IoEvent * wanted)()
    timeout = (ctypes.c_long * 2)(0, 0)
    count = libc().syscall(
        ctypes.c_long(_aio_numbers()[2]),
        ctypes.c_ulong(context),
        ctypes.c_long(0),
        ctypes.c_long(wanted),
        events,
        timeout,
    )
    if count < 0:
        _raise("io_getevents")
    return [events[i].res for i in range(count)]


def aio_ring_pending(context: int) -> int:
    """Completed events not yet reaped, read from the ring's header in our memory
    (struct aio_ring: id, nr, head, tail as u32)."""
    head, tail, size = (ctypes.c_uint32.from_address(context + offset).value for offset in (8, 12, 4))
    return (tail - head) % size if size else 0
