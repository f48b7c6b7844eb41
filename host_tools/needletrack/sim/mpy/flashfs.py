# The virtual probe's flash filesystem: a host directory mounted at "/", so firmware paths ("/nt_config.json")
# and mpremote's view of the device (ls /, cp) stay inside it.
#
# It delegates to the unix port's VfsPosix. rename() alone goes through a root-less VfsPosix with both paths
# joined here: a rooted VfsPosix builds both of rename's host paths in one shared buffer, so the second
# overwrites the first and every rename fails with ENOENT. The store's atomic replace depends on rename.
import vfs


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
        return self.fs.ilistdir(path)

    def chdir(self, path):
        return self.fs.chdir(path)

    def getcwd(self):
        return self.fs.getcwd()

    def mkdir(self, path):
        return self.fs.mkdir(path)

    def remove(self, path):
        return self.fs.remove(path)

    def rmdir(self, path):
        return self.fs.rmdir(path)

    def rename(self, old, new):
        return self.raw.rename(self._host(old), self._host(new))

    def stat(self, path):
        return self.fs.stat(path)

    def open(self, path, mode):
        return self.fs.open(path, mode)

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
