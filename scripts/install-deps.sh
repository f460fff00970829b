#!/bin/sh
# Installs the Debian packages zfront needs to build and test, if missing,
# then the browser test's npm packages (tests/browser: playwright-core, pinned
# in package.json + package-lock.json) with `npm ci` when node_modules is
# missing or older than the lock file. Idempotent: runs apt-get only when
# something is not installed yet. No browser is downloaded: the browser test
# drives Debian's chromium (/usr/bin/chromium).
set -eu

PACKAGES="
meson ninja-build pkg-config gcc
libevent-dev libssl-dev libhttp-parser-dev libnghttp2-dev libssh-dev libwslay-dev libjansson-dev libzmq3-dev
libpython3.11-dev python3 python3-pastedeploy libcrypt-dev openssl
systemd
python3-pytest python3-websockets curl openssh-client python3-paramiko nghttp2-client python3-h2
litmus cadaver ssh-audit python3-cryptography davfs2
python3-zmq redis-server python3-redis libsystemd-dev python3-matplotlib python3-prometheus-client
chromium
clang libclang-rt-14-dev
"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

# node and npm: Debian's unless some other nodejs (that may bundle npm) is there
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"

if [ -n "$missing" ]; then
    echo "install-deps: installing:$missing"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        SUDO=sudo
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q --no-install-recommends $missing
fi

BROWSER_DIR="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
stamp="$BROWSER_DIR/node_modules/.package-lock.json"
if [ ! -f "$stamp" ] ||
    [ -n "$(find "$BROWSER_DIR" -maxdepth 1 -name 'package*.json' -newer "$stamp")" ]; then
    echo "install-deps: npm ci in $BROWSER_DIR"
    (cd "$BROWSER_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi
