"""host-local's disk store, byte-compatible with Go's backend/disk (cni-reference §4.2).

``<dataDir>/<network>/<ip>`` holds ``<containerID>\\r\\n<ifname>`` (0600, no newline),
``last_reserved_ip.<set>`` the last address handed out, and ``lock`` is flock'd for
every operation. A Go host-local and ours can share one directory.

We write a reservation to a temp file, fsync it and hard-link it into place:
link() fails with EEXIST exactly like O_EXCL, but a crash can never leave a
zero-byte reservation behind.
"""
from __future__ import annotations

import errno
import fcntl
import ipaddress
import os

from ..cni.errors import IO_FAILURE, CNIError, errno_text
from ..ctx import contextmanager
from .ranges import IPAddress

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from collections.abc import Iterator

LOCK_NAME = "lock"
LAST_RESERVED_PREFIX = "last_reserved_ip."
FILE_MODE = 0o600
DIR_MODE = 0o755


def owner_key(container_id: str, ifname: str) -> str:
    return f"{container_id}\r\n{ifname}"


def _io_error(path: str, exc: OSError, doing: str) -> CNIError:
    fix = {errno.ENOSPC: "free space on that filesystem", errno.EROFS: "mount it read-write",
           errno.EACCES: "check its permissions (the plugin runs as root)"}.get(
        exc.errno or 0, "check that the path is a writable directory")
    return CNIError(IO_FAILURE, f"host-local store: failed to {doing} {path}: {errno_text(exc)}", fix)


def write_atomic(path: str, data: bytes, mode: int = FILE_MODE) -> None:
    """Write via temp file + fsync + rename, so readers see old or new content, never a torn file."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    except OSError:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.rename(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise


class Store:
    def __init__(self, data_dir: str, network: str) -> None:
        self.dir = os.path.join(data_dir, network)
        self._lock_fd = -1

    # -- locking ------------------------------------------------------------
    @contextmanager
    def locked(self, create: bool = True) -> Iterator[Store]:
        try:
            if create:
                os.makedirs(self.dir, mode=DIR_MODE, exist_ok=True)
            fd = os.open(os.path.join(self.dir, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise _io_error(self.dir, exc, "open the store") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd
            yield self
        finally:
            self._lock_fd = -1
            os.close(fd)  # closing releases the flock

    # -- reservations -------------------------------------------------------
    def _path(self, ip: IPAddress) -> str:
        return os.path.join(self.dir, str(ip))

    def reserve(self, container_id: str, ifname: str, ip: IPAddress, set_index: int) -> bool:
        """Reserve ``ip``; False when it is taken. Records it as the set's last reservation."""
        path = self._path(ip)
        tmp = os.path.join(self.dir, f".{ip}.tmp{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            try:
                os.write(fd, owner_key(container_id, ifname).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        except OSError as exc:
            _silent_unlink(tmp)
            raise _io_error(path, exc, "write reservation") from None
        try:
            write_atomic(os.path.join(self.dir, f"{LAST_RESERVED_PREFIX}{set_index}"), str(ip).encode())
        except OSError as exc:
            _silent_unlink(path)
            raise _io_error(self.dir, exc, "record last_reserved_ip in") from None
        return True

    def last_reserved(self, set_index: int) -> IPAddress | None:
        """A missing or torn last_reserved_ip is treated as absent."""
        try:
            with open(os.path.join(self.dir, f"{LAST_RESERVED_PREFIX}{set_index}"), "rb") as f:
                return ipaddress.ip_address(f.read(64).decode("ascii").strip())
        except (OSError, ValueError, UnicodeDecodeError):
            return None

    def entries(self) -> Iterator[tuple[str, IPAddress | None, str]]:
        """(file name, ip or None, content) of every reservation-like file."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            if name == LOCK_NAME or name.startswith(LAST_RESERVED_PREFIX) or name.startswith("."):
                continue
            path = os.path.join(self.dir, name)
            try:
                with open(path, "rb") as f:
                    content = f.read(4096).decode("utf-8", "replace")
            except (IsADirectoryError, FileNotFoundError):
                continue
            try:
                ip: IPAddress | None = ipaddress.ip_address(name.replace("_", ":"))
            except ValueError:
                ip = None
            yield name, ip, content.strip()

    def get_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        key = owner_key(container_id, ifname)
        return [ip for _, ip, content in self.entries() if ip is not None and content == key]

    def has_legacy(self, container_id: str) -> bool:
        return any(content == container_id for _, _, content in self.entries())

    def release_by_id(self, container_id: str, ifname: str) -> list[str]:
        """Remove every reservation of (id, ifname); legacy id-only files if none matched.

        Also removes what a killed ADD may have left: its temp reservation files, and
        temp files of writers that no longer run.
        """
        entries = list(self.entries())
        key = owner_key(container_id, ifname)
        names = [n for n, _, c in entries if c == key] or [n for n, _, c in entries if c == container_id]
        for name in names:
            self.remove(name)
        self.remove_stale_temps(key)
        return names

    def remove_stale_temps(self, key: str | None = None) -> None:
        """Temp files (``.<name>.tmp<pid>``) holding ``key``, or whose writer is gone."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            if not name.startswith(".") or ".tmp" not in name:
                continue
            pid = name.rsplit(".tmp", 1)[1]
            path = os.path.join(self.dir, name)
            try:
                with open(path, "rb") as f:
                    content = f.read(4096).decode("utf-8", "replace").strip()
            except OSError:
                continue
            writer_gone = pid.isdigit() and not os.path.exists(f"/proc/{pid}")
            if writer_gone or (key is not None and content == key):
                _silent_unlink(path)

    def remove(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.dir, name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _io_error(os.path.join(self.dir, name), exc, "remove reservation") from None


def _silent_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
