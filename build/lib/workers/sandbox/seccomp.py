"""A seccomp filter for the sandbox, compiled with libseccomp (through ctypes) for `bwrap --seccomp`.

Denied: sockets other than Unix ones, `ptrace` and cross-process memory access, mounts and new
namespaces (`unshare`, `setns`, `clone` with namespace flags; `clone3` answers ENOSYS so libc
falls back to `clone`), `bpf`, `perf_event_open`, kernel modules and keyrings, `io_uring`,
`userfaultfd`, `TIOCSTI` and similar. Everything else is allowed: the filter is a further layer
behind the namespaces, the unprivileged uid and the limits, not the only one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from functools import cache

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_NE = 1
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7

AF_UNIX = 1
TIOCSTI = 0x5412
NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)

DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "unshare", "setns",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "keyctl", "add_key", "request_key", "reboot", "swapon", "swapoff", "syslog", "acct",
    "quotactl", "settimeofday", "clock_settime", "adjtimex", "clock_adjtime", "iopl", "ioperm",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "vhangup", "uselib", "personality",
)


class ScmpArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


@cache
def _lib() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ScmpArgCmp)
    ]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def available() -> bool:
    """True when libseccomp is present and the filter compiles."""
    try:
        return len(compile_filter()) > 0
    except OSError:
        return False


@cache
def compile_filter() -> bytes:
    """The filter as a BPF program (what `bwrap --seccomp FD` reads). Raises OSError when unavailable."""
    lib = _lib()
    if lib is None:
        raise OSError("libseccomp is not installed")
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")
    try:
        def rule(action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # not a syscall on this architecture
                return
            array = (ScmpArgCmp * max(len(cmps), 1))(*[ScmpArgCmp(*c) for c in cmps])
            rc = lib.seccomp_rule_add_array(ctx, action, number, len(cmps), array)
            if rc < 0:
                raise OSError(-rc, f"seccomp rule for {name} failed: {os.strerror(-rc)}")

        eperm = _errno_action(errno.EPERM)
        for name in DENIED_SYSCALLS:
            rule(eperm, name)
        no_family = _errno_action(errno.EAFNOSUPPORT)
        rule(no_family, "socket", (0, SCMP_CMP_NE, AF_UNIX, 0))
        rule(no_family, "socketpair", (0, SCMP_CMP_NE, AF_UNIX, 0))
        for flag in NAMESPACE_FLAGS:
            rule(eperm, "clone", (0, SCMP_CMP_MASKED_EQ, flag, flag))
        rule(_errno_action(errno.ENOSYS), "clone3")
        rule(eperm, "ioctl", (1, SCMP_CMP_EQ, TIOCSTI, 0))

        fd = os.memfd_create("seccomp-bpf")
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise OSError(-rc, f"seccomp_export_bpf failed: {os.strerror(-rc)}")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_from_fd(fd: int) -> None:
    """Load a compiled filter into this process and all its threads (for the sandbox without bwrap).

    Sets no_new_privs first (required for an unprivileged filter). Raises OSError when it fails.
    """
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    program = b"".join(chunks)
    if not program or len(program) % 8:
        raise OSError(errno.EINVAL, "the seccomp program is empty or malformed")
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs = 38
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    sys_seccomp = 317 if os.uname().machine == "x86_64" else 277  # aarch64: 277
    seccomp_set_mode_filter, seccomp_filter_flag_tsync = 1, 1
    if libc.syscall(sys_seccomp, seccomp_set_mode_filter, seccomp_filter_flag_tsync, ctypes.byref(prog)) != 0:
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER) failed")
