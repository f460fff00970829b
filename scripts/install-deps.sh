#!/bin/sh
# Installs the Debian packages zfront needs to build and test, if missing.
# Idempotent: runs apt-get only when something is not installed yet.
set -eu

PACKAGES="
meson ninja-build pkg-config gcc
libevent-dev libssl-dev libhttp-parser-dev libnghttp2-dev libssh-dev libwslay-dev libjansson-dev libzmq3-dev
libpython3.11-dev python3 python3-pastedeploy libcrypt-dev openssl
python3-pytest python3-websockets curl openssh-client python3-paramiko nghttp2-client python3-h2
litmus cadaver ssh-audit python3-cryptography davfs2
"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi

echo "install-deps: installing:$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
