"""A davfs2 mount of `zfront --demo`: the store used as a file system through
FUSE (Debian davfs2 1.6). What a file manager or an editor does on such a
mount: list a folder, read a file made over HTTP, write new files (a small one
and a 3 MiB one), make a folder, rename a file into it, delete one. After the
unmount (which waits until davfs2 has uploaded everything) the files are
checked on disk in the store and over HTTP, and no lock davfs2 took is left.

Needs root (mount), /dev/fuse and davfs2 (scripts/install-deps.sh installs
it); skipped otherwise. The davfs2 config is the test's own (`conf=` mount
option): no credentials asked, locks on, uploads at once on close, and
`buf_size 64`: with the default 16 KiB buffer davfs2 1.6's own FUSE code gets
EINVAL from readdir on Linux >= 6.16 (`ls: reading directory: Invalid argument`,
davfs2 issue #22), whatever the server."""
import hashlib
import os
import shutil
import subprocess
import time

import pytest
from davtest import DAV, dav, lockinfo, multistatus, start_demo

MOUNT_DAVFS = shutil.which("mount.davfs") or "/sbin/mount.davfs"
CAN_MOUNT = (os.path.exists(MOUNT_DAVFS) and os.path.exists("/dev/fuse")
             and os.geteuid() == 0)

pytestmark = pytest.mark.skipif(not CAN_MOUNT, reason="needs root, /dev/fuse and davfs2 "
                                "(scripts/install-deps.sh installs davfs2)")

LOCKDISCOVERY = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:lockdiscovery/>'
                 '</D:prop></D:propfind>')


def mounted(path):
    with open("/proc/mounts") as f:
        return any(line.split()[1] == path for line in f)


def davfs_pid(mnt):
    """mount.davfs's PID from its pid file (/var/run/mount.davfs/<path with - for />.pid)."""
    name = mnt.strip("/").replace("/", "-") + ".pid"
    try:
        with open(os.path.join("/var/run/mount.davfs", name)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def unmount(mnt):
    """umount (umount.davfs waits for the uploads); on failure a lazy unmount
    and SIGTERM to our mount.davfs by its PID. Returns umount's output."""
    pid = davfs_pid(mnt)
    p = subprocess.run(["umount", mnt], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    if mounted(mnt):
        subprocess.run(["umount", "-l", mnt], timeout=30)
        if pid:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
    elif pid:
        # umount.davfs returns once mount.davfs is gone; make sure of it
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and os.path.exists("/proc/%d" % pid):
            time.sleep(0.1)
    return p.stdout.decode("utf-8", "replace")


def test_davfs2_mount_read_write(server_factory):
    srv = start_demo(server_factory, name="davfs2")
    os.chmod(srv.root, 0o711)  # davfs2 drops to its own user: it walks into the cache below
    # a folder and a file made over HTTP before the mount
    assert dav(srv, "MKCOL", "/shared/")[0] == 201
    assert dav(srv, "PUT", "/shared/from-http.txt", b"made over HTTP\n")[0] == 201

    mnt = os.path.join(srv.root, "mnt")
    cache = os.path.join(srv.root, "davfs-cache")
    os.mkdir(mnt)
    os.mkdir(cache)
    shutil.chown(cache, group="davfs2")  # davfs2 wants its group on the cache dir
    os.chmod(cache, 0o775)
    conf = os.path.join(srv.root, "davfs2.conf")
    with open(conf, "w") as f:
        f.write("ask_auth 0\nuse_locks 1\ndelay_upload 0\nbuf_size 64\ncache_dir %s\n" % cache)
    p = subprocess.run([MOUNT_DAVFS, srv.url("/"), mnt, "-o",
                        "conf=%s,uid=%d,gid=%d" % (conf, os.getuid(), os.getgid())],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0 and mounted(mnt), out

    big = os.urandom(3 << 20)
    try:
        # what is there: the listing of the root and of a folder, a file's bytes
        top = os.listdir(mnt)
        assert "shared" in top and "files" in top, top
        assert os.listdir(os.path.join(mnt, "shared")) == ["from-http.txt"]
        with open(os.path.join(mnt, "shared", "from-http.txt"), "rb") as f:
            assert f.read() == b"made over HTTP\n"
        # changes through the file system
        os.mkdir(os.path.join(mnt, "docs"))
        with open(os.path.join(mnt, "notes.txt"), "wb") as f:
            f.write(b"written through davfs2\n")
        with open(os.path.join(mnt, "docs", "big.bin"), "wb") as f:
            f.write(big)
        with open(os.path.join(mnt, "doomed.txt"), "wb") as f:
            f.write(b"to be deleted\n")
        os.rename(os.path.join(mnt, "notes.txt"), os.path.join(mnt, "docs", "notes.txt"))
        os.unlink(os.path.join(mnt, "doomed.txt"))
        assert sorted(os.listdir(os.path.join(mnt, "docs"))) == ["big.bin", "notes.txt"]
    finally:
        umount_out = unmount(mnt)
    assert not mounted(mnt), umount_out

    # in the store on disk
    docs = os.path.join(srv.content, "docs")
    assert sorted(os.listdir(docs)) == ["big.bin", "notes.txt"]
    with open(os.path.join(docs, "notes.txt"), "rb") as f:
        assert f.read() == b"written through davfs2\n"
    with open(os.path.join(docs, "big.bin"), "rb") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(big).digest()
    for gone in ("notes.txt", "doomed.txt"):
        assert not os.path.exists(os.path.join(srv.content, gone))
    # and over HTTP
    status, _, body = dav(srv, "GET", "/docs/notes.txt")
    assert status == 200 and body == b"written through davfs2\n"
    assert dav(srv, "GET", "/doomed.txt")[0] == 404
    # davfs2 locked each file it wrote (use_locks): every lock is released
    status, _, body = dav(srv, "PROPFIND", "/", LOCKDISCOVERY, {"Depth": "infinity"})
    assert status == 207
    for href, props in multistatus(body).items():
        st, el = props[DAV + "lockdiscovery"]
        assert st == 200 and len(el) == 0, (href, body)
    # and nothing is left locked for another client either
    status, _, _ = dav(srv, "LOCK", "/docs/notes.txt", lockinfo(), {"Timeout": "Second-60"})
    assert status == 200
