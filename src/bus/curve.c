/* CURVE between bus members (libzmq's CurveZMQ): the key files and a ZAP
 * handler (RFC 27) that lets in only clients whose public key is the bus's
 * own (members sharing the key pair) or listed in bus.curve_clients.
 * Without ZAP libzmq would let any client in that knows the server's
 * public key, which is not a secret. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "../core/log.h"
#include "bus.h"

/* Reads a z85 key (40 characters, surrounding white space ignored) from
 * the first line of path that holds one. Returns ZF_OK or ZF_ERROR. */
static int read_key(const char *path, const char *what, char out[41])
{
    FILE *f = fopen(path, "r");
    if (!f) {
        zf_log(ZF_LOG_ERROR, NULL, "bus: cannot read %s %s: %s", what, path, strerror(errno));
        return ZF_ERROR;
    }
    char line[256];
    int rc = ZF_ERROR;
    while (fgets(line, sizeof line, f)) {
        char *p = line + strspn(line, " \t\r\n");
        size_t n = strcspn(p, " \t\r\n");
        if (n == 0 || p[0] == '#')
            continue;
        uint8_t bin[32];
        p[n] = 0;
        if (n == 40 && zmq_z85_decode(bin, p)) {
            memcpy(out, p, 41);
            rc = ZF_OK;
        }
        break;
    }
    fclose(f);
    if (rc != ZF_OK)
        zf_log(ZF_LOG_ERROR, NULL, "bus: %s %s holds no z85 key (40 characters)", what, path);
    return rc;
}

static int load_clients(struct zf__bus_curve *c, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        zf_log(ZF_LOG_ERROR, NULL, "bus: cannot read bus.curve_clients %s: %s", path,
               strerror(errno));
        return ZF_ERROR;
    }
    char line[256];
    int lineno = 0, rc = ZF_OK;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *p = line + strspn(line, " \t\r\n");
        size_t n = strcspn(p, " \t\r\n");
        if (n == 0 || p[0] == '#')
            continue;
        p[n] = 0;
        uint8_t bin[32];
        if (n != 40 || !zmq_z85_decode(bin, p)) {
            zf_log(ZF_LOG_ERROR, NULL, "bus: %s:%d: not a z85 public key", path, lineno);
            rc = ZF_ERROR;
            break;
        }
        void *nc = realloc(c->clients, (c->nclients + 1) * sizeof *c->clients);
        if (!nc) {
            fprintf(stderr, "zfront: out of memory\n");
            abort();
        }
        c->clients = nc;
        memcpy(c->clients[c->nclients++], p, 41);
    }
    fclose(f);
    return rc;
}

int zf__bus_curve_load(struct zf__bus_curve *c)
{
    memset(c, 0, sizeof *c);
    const char *sk = zf_bus_cfg.curve_secret_key;
    if (!sk || !*sk) {
        if ((zf_bus_cfg.curve_server_key && *zf_bus_cfg.curve_server_key) ||
            (zf_bus_cfg.curve_clients && *zf_bus_cfg.curve_clients)) {
            zf_log(ZF_LOG_ERROR, NULL, "bus: CURVE keys given without bus.curve_secret_key");
            return ZF_ERROR;
        }
        return ZF_OK;
    }
    if (zmq_has("curve") != 1) {
        zf_log(ZF_LOG_ERROR, NULL, "bus: this libzmq has no CURVE support");
        return ZF_ERROR;
    }
    if (read_key(sk, "bus.curve_secret_key", c->secret) != ZF_OK)
        return ZF_ERROR;
    if (zmq_curve_public(c->public_, c->secret) != 0) {
        zf_log(ZF_LOG_ERROR, NULL, "bus: cannot derive the public key of %s", sk);
        return ZF_ERROR;
    }
    memcpy(c->server, c->public_, 41);
    const char *srv = zf_bus_cfg.curve_server_key;
    if (srv && *srv && read_key(srv, "bus.curve_server_key", c->server) != ZF_OK)
        return ZF_ERROR;
    const char *cl = zf_bus_cfg.curve_clients;
    if (cl && *cl && load_clients(c, cl) != ZF_OK) {
        zf__bus_curve_free(c);
        return ZF_ERROR;
    }
    c->on = 1;
    return ZF_OK;
}

void zf__bus_curve_free(struct zf__bus_curve *c)
{
    free(c->clients);
    memset(c, 0, sizeof *c);
}

int zf__bus_curve_apply(void *sock, const struct zf__bus_curve *c, int server)
{
    int one = 1;
    int rc = zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, c->secret, 40) |
             zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, c->public_, 40);
    if (server) {
        rc |= zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one);
        rc |= zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "zfront-bus", 10);
    } else {
        rc |= zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, c->server, 40);
    }
    if (rc != 0) {
        zf_log(ZF_LOG_ERROR, NULL, "bus: cannot set the CURVE keys: %s", zmq_strerror(errno));
        return ZF_ERROR;
    }
    return ZF_OK;
}

void *zf__bus_zap_open(void *ctx)
{
    void *zap = zmq_socket(ctx, ZMQ_REP);
    int zero = 0;
    if (!zap || zmq_setsockopt(zap, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_bind(zap, "inproc://zeromq.zap.01") != 0) {
        zf_log(ZF_LOG_ERROR, NULL, "bus: cannot start the CURVE authentication (ZAP): %s",
               zmq_strerror(errno));
        if (zap)
            zmq_close(zap);
        return NULL;
    }
    return zap;
}

static int key_allowed(const struct zf__bus_curve *c, const uint8_t *key, size_t len)
{
    char z85[41];
    if (len != 32 || !zmq_z85_encode(z85, key, 32))
        return 0;
    if (strcmp(z85, c->public_) == 0)
        return 1;
    for (size_t i = 0; i < c->nclients; i++)
        if (strcmp(z85, c->clients[i]) == 0)
            return 1;
    return 0;
}

int zf__bus_zap_serve(void *zap, const struct zf__bus_curve *c, int flags)
{
    /* request: version, request id, domain, address, identity, mechanism,
     * credentials (the client's public key for CURVE) */
    zmq_msg_t f[8];
    size_t n = 0;
    int more = 1;
    while (more) {
        zmq_msg_t *m = &f[n < 7 ? n : 7];
        zmq_msg_init(m);
        if (zmq_msg_recv(m, zap, n ? 0 : flags) < 0) {
            zmq_msg_close(m);
            if (n == 0)
                return ZF_AGAIN;
            break;
        }
        more = zmq_msg_more(m);
        if (n >= 7)
            zmq_msg_close(m);
        n++;
    }
    size_t kept = n < 7 ? n : 7;
    int ok = kept == 7 && zmq_msg_size(&f[5]) == 5 &&
             memcmp(zmq_msg_data(&f[5]), "CURVE", 5) == 0 &&
             key_allowed(c, zmq_msg_data(&f[6]), zmq_msg_size(&f[6]));
    const char *status = ok ? "200" : "400";
    const char *text = ok ? "OK" : "public key not allowed on the bus";
    zmq_send(zap, "1.0", 3, ZMQ_SNDMORE);
    if (kept >= 2)
        zmq_send(zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
    else
        zmq_send(zap, "", 0, ZMQ_SNDMORE);
    zmq_send(zap, status, 3, ZMQ_SNDMORE);
    zmq_send(zap, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(zap, "", 0, ZMQ_SNDMORE);
    zmq_send(zap, "", 0, 0);
    if (!ok)
        zf_log(ZF_LOG_WARN, NULL, "bus: refused a CURVE client: %s", text);
    for (size_t i = 0; i < kept; i++)
        zmq_msg_close(&f[i]);
    return ZF_OK;
}
