#!/bin/sh
# Installs what bench/run needs, from Debian packages, when it is missing:
# the peer servers (nginx, waitress, gunicorn, uWSGI + python3 plugin, Twisted),
# the load tools (wrk; ab and curl for looking by hand) and Debian's python3;
# for the HTTP/2 part (bench/h2.py): h2load, hypercorn and openssl;
# for the WebDAV anchors (bench/dav/run): Apache (mod_dav_fs), nginx's dav-ext
# module, PyWebDAV and litmus; for the WebSocket fan-out (bench/ws_fanout.py):
# gcc (it compiles the load client bench/wsload.c), python3-websockets and
# Autobahn/Twisted (with python3-openssl for wss://) as the peer servers; for the bus
# hop (bench/bus.py): redis-server and python3-redis (the Redis pub/sub side).
# Nothing else: bench/run uses only /usr/bin/python3's standard library.
# Does nothing (and needs no root) when everything is already there.
set -eu

# command-or-file to check -> Debian package that provides it
need() {
    if [ ! -e "$1" ]; then
        missing="$missing $2"
    fi
}
need_module() {
    if [ ! -x /usr/bin/python3 ] || ! /usr/bin/python3 -c "import $1" 2>/dev/null; then
        missing="$missing $2"
    fi
}

missing=""
need /usr/bin/python3 python3
need /usr/sbin/nginx nginx-light
need /usr/bin/wrk wrk
need /usr/bin/ab apache2-utils
need /usr/bin/curl curl
need /usr/bin/gunicorn gunicorn
need /usr/bin/uwsgi-core uwsgi-core
need /usr/lib/uwsgi/plugins/python3_plugin.so uwsgi-plugin-python3
need_module waitress python3-waitress
need_module twisted.web.wsgi python3-twisted
need /usr/bin/h2load nghttp2-client
need /usr/bin/openssl openssl
need_module hypercorn python3-hypercorn
need /usr/sbin/apache2 apache2
need /usr/lib/nginx/modules/ngx_http_dav_ext_module.so libnginx-mod-http-dav-ext
need /usr/bin/davserver3 python3-webdav
need /usr/bin/litmus litmus
need /usr/bin/gcc gcc
need_module websockets python3-websockets
need_module autobahn.twisted.websocket python3-autobahn
need_module OpenSSL python3-openssl
need /usr/bin/redis-server redis-server
need_module redis python3-redis

if [ -z "$missing" ]; then
    echo "bench/setup.sh: all benchmark peers and tools are installed"
    exit 0
fi

echo "bench/setup.sh: installing:$missing"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "bench/setup.sh: not root and no sudo: install these Debian packages:$missing" >&2
    echo "bench/setup.sh: (bench/run skips a missing peer and says so)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086  # word splitting of the package list is intended
$SUDO apt-get install -y -q --no-install-recommends $missing
# The nginx package may start the system service: the benchmark never uses it
# (bench/run starts its own nginx with its own prefix on a loopback port); so may
# apache2 (bench/dav/run starts its own Apache with its own -f config).
echo "bench/setup.sh: done"
