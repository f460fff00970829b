"""Helpers for the SSH console tests (test_ssh*.py).

Keys are made with ssh-keygen in a temp dir: a client key that is allowed,
one that is not, one listed behind an option (must be refused), a 1024-bit
RSA key (too small, refused) and the server's host key (0600), whose public
half goes into a known_hosts file so the OpenSSH client checks the server
strictly. The server is the real binary with the integration test app,
started by zftest.Server with `--ssh 127.0.0.1:0`; the bound port is read
from the log line "ssh: listening on 127.0.0.1:PORT".
"""
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

import paramiko
import pytest

from zftest import TIMEOUT, wait_until

SSH_LISTEN_RE = re.compile(r"ssh: listening on 127\.0\.0\.1:(\d+)")
PASSWORD = "correct horse battery"


def keygen(path, kind="ed25519", bits=None):
    cmd = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "zf-test", "-f", path]
    if bits:
        cmd += ["-b", str(bits)]
    subprocess.run(cmd, check=True, timeout=60)
    with open(path + ".pub") as f:
        return f.read().strip()


def crypt_hash(password):
    """A SHA-512 crypt(3) hash, made by openssl (no Python crypt module
    needed)."""
    out = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password.encode(),
                         capture_output=True, check=True, timeout=30)
    return out.stdout.decode().strip()


class Keys:
    """The key material of one test module (removed at teardown)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="zf-ssh-keys-")
        p = lambda name: os.path.join(self.dir, name)  # noqa: E731
        self.client = p("client")
        self.client_pub = keygen(self.client)
        self.other = p("other")
        keygen(self.other)
        self.optioned = p("optioned")
        optioned_pub = keygen(self.optioned)
        self.small_rsa = p("small_rsa")
        small_pub = keygen(self.small_rsa, "rsa", 1024)
        self.ecdsa = p("ecdsa")
        ecdsa_pub = keygen(self.ecdsa, "ecdsa", 256)
        self.host_key = p("host_key")
        self.host_pub = keygen(self.host_key)
        os.chmod(self.host_key, 0o600)
        self.authorized_keys = p("authorized_keys")
        with open(self.authorized_keys, "w") as f:
            f.write("# test keys\n\n")
            f.write(self.client_pub + "\n")
            f.write('from="127.0.0.1",no-pty ' + optioned_pub + "\n")
            f.write(small_pub + "\n")
            f.write(ecdsa_pub + "\n")
        os.chmod(self.authorized_keys, 0o600)
        self.askpass = p("askpass.sh")

    def known_hosts(self, port, pub=None):
        path = os.path.join(self.dir, "known_hosts_%d" % port)
        with open(path, "w") as f:
            f.write("[127.0.0.1]:%d %s\n" % (port, pub or self.host_pub))
        return path

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def start_ssh_server(factory, keys, *extra, host_key=True, **kw):
    """Starts zfront (test app + HTTP + SSH). Returns the Server with
    .ssh_port set."""
    args = ["--ssh", "127.0.0.1:0", "--ssh-authorized-keys", keys.authorized_keys]
    if host_key:
        args += ["--ssh-host-key", keys.host_key]
    srv = factory(*args, *extra, **kw)
    m = srv.wait_log(SSH_LISTEN_RE.pattern)
    assert m, "no ssh listener in the log:\n" + srv.log()[-3000:]
    srv.ssh_port = int(m.group(1))
    return srv


def ssh(srv, keys, *command, key=None, input=None, options=(), env=None, timeout=60):
    """Runs the OpenSSH client against srv. Returns CompletedProcess (bytes)."""
    # For ssh the first value of an option wins: the caller's go first.
    cmd = [
        "ssh", "-F", "/dev/null",
        *options,
        "-i", key or keys.client,
        "-p", str(srv.ssh_port),
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UserKnownHostsFile=" + keys.known_hosts(srv.ssh_port),
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "ConnectTimeout=20",
        "admin@127.0.0.1",
        *command,
    ]
    full_env = dict(os.environ)
    full_env.pop("SSH_AUTH_SOCK", None)  # only the key given here
    if env:
        full_env.update(env)
    return subprocess.run(cmd, input=input if input is not None else b"", capture_output=True,
                          timeout=timeout, env=full_env)


def ssh_password(srv, keys, password, *command):
    """The OpenSSH client with password authentication only; the password
    comes from an SSH_ASKPASS script (forced, no tty needed)."""
    with open(keys.askpass, "w") as f:
        f.write("#!/bin/sh\nprintf '%s\\n' " + "'" + password.replace("'", "") + "'\n")
    os.chmod(keys.askpass, 0o700)
    return ssh(srv, keys, *command, options=(
        "-o", "BatchMode=no",
        "-o", "PubkeyAuthentication=no",
        "-o", "PreferredAuthentications=password",
        "-o", "NumberOfPasswordPrompts=1",
    ), env={"SSH_ASKPASS": keys.askpass, "SSH_ASKPASS_REQUIRE": "force",
            "DISPLAY": ":0"})


def connect_paramiko(srv, keys, key=None, **kw):
    c = paramiko.SSHClient()
    c.get_host_keys().add("[127.0.0.1]:%d" % srv.ssh_port, "ssh-ed25519",
                          paramiko.Ed25519Key.from_private_key_file(keys.host_key))
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect("127.0.0.1", srv.ssh_port, username="admin", key_filename=key or keys.client,
              look_for_keys=False, allow_agent=False, timeout=TIMEOUT, banner_timeout=TIMEOUT,
              auth_timeout=TIMEOUT, **kw)
    return c


class Console:
    """An interactive pty session driven by paramiko. `out` accumulates
    everything the server sent; expect() waits for a marker after the
    last one consumed."""

    def __init__(self, srv, keys, width=200, height=40):
        self.client = connect_paramiko(srv, keys)
        self.chan = self.client.invoke_shell(term="xterm", width=width, height=height)
        self.chan.settimeout(0.2)
        self.out = b""
        self.pos = 0
        self._lock = threading.Lock()

    def _pump(self):
        try:
            data = self.chan.recv(65536)
        except Exception:  # socket.timeout and friends: nothing yet
            return True
        if not data:
            return False
        self.out += data
        return True

    def expect(self, marker, timeout=TIMEOUT):
        """Waits until `marker` (bytes) appears after the last match;
        returns what came before it (since the last match)."""
        if isinstance(marker, str):
            marker = marker.encode()
        deadline = time.monotonic() + timeout
        while True:
            i = self.out.find(marker, self.pos)
            if i >= 0:
                before = self.out[self.pos:i]
                self.pos = i + len(marker)
                return before
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %r; got %r"
                                     % (marker, self.out[self.pos:][-2000:]))
            if not self._pump():
                raise AssertionError("session ended waiting for %r; got %r"
                                     % (marker, self.out[self.pos:][-2000:]))

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.chan.sendall(data)

    def line(self, text):
        self.send(text + "\r")

    def run(self, text, marker=">>> "):
        """Sends a line and returns the output up to the next prompt."""
        self.line(text)
        return self.expect(marker)

    def wait_closed(self, timeout=TIMEOUT):
        return wait_until(lambda: self.chan.exit_status_ready() or self.chan.closed, timeout)

    def close(self):
        self.client.close()


def thread_count(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def console_threads(pid):
    """Threads named zf-ssh-console (one per running console session)."""
    n = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                n += f.read().strip() == "zf-ssh-console"
        except OSError:
            pass
    return n


@pytest.fixture(scope="module", name="keys")
def keys_fixture():
    """The test module's Keys; import keys_fixture to use `keys`."""
    k = Keys()
    yield k
    k.cleanup()
