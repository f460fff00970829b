/* `zfront --bus-forwarder tcp://HOST:PORT`: a process that only forwards
 * bus messages, so that instances on N hosts need N connections, not N².
 * Publishers (the instances' bus.forwarders) connect to PORT+1 (XSUB),
 * subscribers to PORT (XPUB); zmq_proxy passes messages one way and
 * subscriptions the other. With bus.curve_secret_key both sockets are
 * CURVE servers and a thread answers the ZAP requests. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "../core/log.h"
#include "bus.h"

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    stopping = sig;
}

struct zap_thread {
    void *zap;
    struct zf__bus_curve *curve;
};

static void *zap_main(void *arg)
{
    struct zap_thread *z = arg;
    /* blocking: zmq_ctx_term makes the wait fail with ETERM */
    while (zf__bus_zap_serve(z->zap, z->curve, 0) == ZF_OK)
        ;
    zmq_close(z->zap);
    return NULL;
}

static void *server_socket(void *ctx, int type, const char *url, struct zf__bus_curve *c)
{
    void *s = zmq_socket(ctx, type);
    int zero = 0, hwm = (int)zf_bus_cfg.hwm;
    if (!s)
        return NULL;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if ((c->on && zf__bus_curve_apply(s, c, 1) != ZF_OK) || zmq_bind(s, url) != 0) {
        zf_log(ZF_LOG_ERROR, NULL, "bus forwarder: cannot bind %s: %s", url, zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    return s;
}

int zf_bus_forwarder_run(void)
{
    const char *sub_url = zf_bus_cfg.forwarder;
    char pub_url[256];
    if (zf__bus_port_plus(sub_url, 1, pub_url, sizeof pub_url) != ZF_OK) {
        zf_log(ZF_LOG_ERROR, NULL, "bus.forwarder: \"%s\" is not tcp://HOST:PORT", sub_url);
        return 2;
    }
    struct zf__bus_curve curve;
    if (zf__bus_curve_load(&curve) != ZF_OK)
        return 2;
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: the proxy returns */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* The signal must interrupt zmq_proxy's wait on this thread: libzmq's
     * I/O threads and the ZAP thread, started below, inherit a mask that
     * blocks it, and this thread unblocks it once they exist. */
    sigset_t stop_sigs, old;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGTERM);
    sigaddset(&stop_sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_sigs, &old);

    int rc = 1;
    void *ctx = zmq_ctx_new();
    struct zap_thread z = {NULL, &curve};
    pthread_t zt;
    int zap_running = 0;
    void *xpub = NULL, *xsub = NULL;
    if (!ctx)
        goto out;
    if (curve.on) {
        if (!(z.zap = zf__bus_zap_open(ctx)))
            goto out;
        if (pthread_create(&zt, NULL, zap_main, &z) != 0) {
            zmq_close(z.zap);
            goto out;
        }
        zap_running = 1;
    }
    if (!(xpub = server_socket(ctx, ZMQ_XPUB, sub_url, &curve)) ||
        !(xsub = server_socket(ctx, ZMQ_XSUB, pub_url, &curve)))
        goto out;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    zf_log(ZF_LOG_INFO, NULL,
           "bus forwarder: subscribers connect to %s, publishers to %s%s (pid %ld)", sub_url,
           pub_url, curve.on ? ", CURVE on" : "", (long)getpid());
    while (!stopping) {
        /* returns only when interrupted (a signal) or the context ends */
        if (zmq_proxy(xsub, xpub, NULL) != 0 && errno != EINTR)
            break;
    }
    zf_log(ZF_LOG_INFO, NULL, "bus forwarder: stopping (%s)",
           stopping == SIGINT ? "SIGINT"
           : stopping         ? "SIGTERM"
                              : zmq_strerror(errno));
    rc = stopping ? 0 : 1;
out:
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (xpub)
        zmq_close(xpub);
    if (xsub)
        zmq_close(xsub);
    if (ctx)
        zmq_ctx_term(ctx); /* ends the ZAP thread's wait */
    if (zap_running)
        pthread_join(zt, NULL);
    zf__bus_curve_free(&curve);
    return rc;
}
