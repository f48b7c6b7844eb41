# The virtual probe's flash filesystem: a host directory mounted at "/", so firmware paths ("/nt_config.json")
# and mpremote's view of the device (ls /, cp) stay inside it.
#
# Flash time: with the board's CPU model on, writing costs what the board's flash chip takes (vclock.charge_us;
# on the RP2040 the whole chip stalls, since it runs its code from that flash). littlefs writes copy-on-write: a
# file written costs a 4 KB sector erase per sector its data take and a page program per 256 bytes, and each
# change of the directory (a closed file, a rename, a remove) a metadata commit, a page program, with a sector
# erase every COMPACT_EVERY commits when the metadata pair is compacted. A file's data are charged at the next
# filesystem call after it was opened for writing (by then it is closed: the store writes, closes, renames).
#
# It delegates to the unix port's VfsPosix. rename() alone goes through a root-less VfsPosix with both paths
# joined here: a rooted VfsPosix builds both of rename's host paths in one shared buffer, so the second
# overwrites the first and every rename fails with ENOENT. The store's atomic replace depends on rename.
import vfs

import vclock

PAGE = 256
SECTOR = 4096
COMPACT_EVERY = 16


class DeviceFS:
    def __init__(self, root, capacity_bytes=2 * 1024 * 1024, block_size=4096):
        if not root.startswith("/"):
            # Host paths are resolved after the mount moves the working directory to the device's "/".
            raise ValueError("flash directory must be an absolute host path: %s" % root)
        self.root = root.rstrip("/")
        self.fs = vfs.VfsPosix(self.root)
        self.raw = vfs.VfsPosix()
        self.capacity_bytes = capacity_bytes
        self.block_size = block_size
        self.program_us = 0  # page program, typical (0: flash time not modelled)
        self.erase_us = 0  # 4 KB sector erase, typical
        self.writing = []  # files opened for writing, not yet charged
        self.commits = 0

    def timing(self, program_us, erase_us):
        self.program_us = program_us
        self.erase_us = erase_us

    def _settle(self, commits=0):
        # What the flash chip did since the last call: the data of files written, then directory commits.
        if not self.program_us:
            return
        us = 0
        for path in self.writing:
            try:
                size = self.fs.stat(path)[6]
            except OSError:
                continue
            us += (size + SECTOR - 1) // SECTOR * self.erase_us + (size + PAGE - 1) // PAGE * self.program_us
            commits += 1
        self.writing.clear()
        for _ in range(commits):
            self.commits += 1
            us += self.program_us
            if self.commits % COMPACT_EVERY == 0:
                us += self.erase_us
        if us:
            vclock.charge_us(us, 1)
    def _host(self, path):
        if not path.startswith("/"):
            cwd = self.fs.getcwd()
            path = cwd.rstrip("/") + "/" + path
        return self.root + path

    def mount(self, readonly, mkfs):
        self.fs.mount(readonly, mkfs)

    def umount(self):
        self.fs.umount()

    def ilistdir(self, path):
        vclock.enter()
        try:
            self._settle(0)
            return self.fs.ilistdir(path)
        finally:
            vclock.leave()

    def chdir(self, path):
        vclock.enter()
        try:
            self._settle(0)
            return self.fs.chdir(path)
        finally:
            vclock.leave()

    def getcwd(self):
        return self.fs.getcwd()

    def mkdir(self, path):
        vclock.enter()
        try:
            self._settle(1)
            return self.fs.mkdir(path)
        finally:
            vclock.leave()

    def remove(self, path):
        vclock.enter()
        try:
            self._settle(1)
            return self.fs.remove(path)
        finally:
            vclock.leave()

    def rmdir(self, path):
        vclock.enter()
        try:
            self._settle(1)
            return self.fs.rmdir(path)
        finally:
            vclock.leave()

    def rename(self, old, new):
        vclock.enter()
        try:
            self._settle(1)
            return self.raw.rename(self._host(old), self._host(new))
        finally:
            vclock.leave()

    def stat(self, path):
        # MicroPython's import asks stat() whether a module's file exists and takes any exception for "no": a
        # Ctrl-C landing here (as it may while the CPU model waits out the board's time) would be lost, and the
        # module not found. It is finished instead and raised at the firmware's next call into the board.
        try:
            vclock.enter()
            try:
                self._settle(0)
                return self.fs.stat(path)
            finally:
                vclock.leave()
        except KeyboardInterrupt:
            vclock.interrupted[0] = 1
            return self.fs.stat(path)

    def open(self, path, mode):
        vclock.enter()
        try:
            self._settle()
            f = self.fs.open(path, mode)
            if self.program_us and ("w" in mode or "a" in mode or "+" in mode):
                self.writing.append(path)
            return f
        finally:
            vclock.leave()

    def used_bytes(self):
        total = 0
        stack = [""]
        while stack:
            d = stack.pop()
            for entry in self.fs.ilistdir(d or "/"):
                name, kind = entry[0], entry[1]
                p = d + "/" + name
                if kind == 0x4000:
                    stack.append(p)
                else:
                    size = self.fs.stat(p)[6]
                    total += (size + self.block_size - 1) // self.block_size * self.block_size
        return total

    def statvfs(self, path):
        # A littlefs-like partition of capacity_bytes, so "free flash" reads as on a board.
        blocks = self.capacity_bytes // self.block_size
        free = blocks - self.used_bytes() // self.block_size
        if free < 0:
            free = 0
        return (self.block_size, self.block_size, blocks, free, free, 0, 0, 0, 0, 255)


def mount_root(root, **kw):
    d = DeviceFS(root, **kw)
    vfs.mount(d, "/")
    import os
    os.chdir("/")
    return d
