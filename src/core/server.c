/* The reactor: listeners, connection ids, cross-thread calls and the
 * graceful shutdown sequence. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exchange.h"
#include "pool.h"
#include "server.h"

struct zf_server *zf_srv;

static struct event *shutdown_timer;

/* ------------------------------------------------------------ connections */

uint64_t zf_conn_init(struct zf_conn *c, const char *proto, const struct sockaddr *sa,
                      socklen_t salen)
{
    (void)salen;
    memset(c, 0, sizeof *c);
    c->id = ++zf_srv->next_conn_id;
    c->proto = proto;
    c->action = NULL;
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, c->peer_addr, sizeof c->peer_addr);
        c->peer_port = ntohs(in->sin_port);
        snprintf(c->peer, sizeof c->peer, "%s:%d", c->peer_addr, c->peer_port);
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, c->peer_addr, sizeof c->peer_addr);
        c->peer_port = ntohs(in6->sin6_port);
        snprintf(c->peer, sizeof c->peer, "[%s]:%d", c->peer_addr, c->peer_port);
    } else {
        snprintf(c->peer_addr, sizeof c->peer_addr, "unix");
        snprintf(c->peer, sizeof c->peer, "unix");
    }
    return c->id;
}

/* -------------------------------------------------------------- listeners */

int zf_parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    const char *port;
    memset(ss, 0, sizeof *ss);
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (!end || end[1] != ':' || (size_t)(end - text - 1) >= sizeof host)
            return ZF_ERROR;
        memcpy(host, text + 1, (size_t)(end - text - 1));
        host[end - text - 1] = 0;
        port = end + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (!colon) {
            snprintf(host, sizeof host, "0.0.0.0");
            port = text;
        } else {
            if ((size_t)(colon - text) >= sizeof host)
                return ZF_ERROR;
            memcpy(host, text, (size_t)(colon - text));
            host[colon - text] = 0;
            if (!host[0])
                snprintf(host, sizeof host, "0.0.0.0");
            else if (strcmp(host, "localhost") == 0)
                snprintf(host, sizeof host, "127.0.0.1");
            port = colon + 1;
        }
    }
    char *end;
    long p = strtol(port, &end, 10);
    if (!*port || *end || p < 0 || p > 65535)
        return ZF_ERROR;
    struct sockaddr_in *in = (void *)ss;
    struct sockaddr_in6 *in6 = (void *)ss;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)p);
        *len = sizeof *in;
        return ZF_OK;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)p);
        *len = sizeof *in6;
        return ZF_OK;
    }
    return ZF_ERROR;
}

static void on_accept(struct evconnlistener *el, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)el;
    struct zf_listener *l = arg;
    if (zf_srv->state != ZF_RUNNING) {
        evutil_closesocket(fd);
        return;
    }
    l->cb(l, fd, sa, salen, l->arg);
}

static void reenable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct zf_listener *l = arg;
    evconnlistener_enable(l->el);
}

static void on_accept_error(struct evconnlistener *el, void *arg)
{
    struct zf_listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    zf_log(ZF_LOG_ERROR, NULL, "%s: accept() on %s failed: %s", l->proto, l->addr,
           evutil_socket_error_to_string(err));
    /* Out of descriptors: pause accepting for a moment instead of spinning. */
    if (err == EMFILE || err == ENFILE) {
        evconnlistener_disable(el);
        struct timeval tv = {0, 200000};
        if (!l->retry)
            l->retry = evtimer_new(zf_srv->base, reenable, l);
        if (l->retry)
            evtimer_add(l->retry, &tv);
    }
}

static void describe(struct zf_listener *l, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, l->host, sizeof l->host);
        l->port = ntohs(in6->sin6_port);
        snprintf(l->addr, sizeof l->addr, "[%s]:%d", l->host, l->port);
    } else {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, l->host, sizeof l->host);
        l->port = ntohs(in->sin_port);
        snprintf(l->addr, sizeof l->addr, "%s:%d", l->host, l->port);
    }
}

struct zf_listener *zf_listen(struct zf_server *srv, const char *addr, const char *proto,
                              zf_accept_cb cb, void *arg)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (zf_parse_addr(addr, &ss, &len) != ZF_OK) {
        zf_log(ZF_LOG_ERROR, NULL, "%s: bad listen address \"%s\" (expected host:port, "
               "[v6]:port or port)", proto, addr);
        return NULL;
    }
    struct zf_listener *l = zf_xcalloc(1, sizeof *l);
    l->cb = cb;
    l->arg = arg;
    l->proto = proto;
    l->el = evconnlistener_new_bind(srv->base, on_accept, l,
                                    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                        LEV_OPT_CLOSE_ON_EXEC,
                                    511, (struct sockaddr *)&ss, (int)len);
    if (!l->el) {
        zf_log(ZF_LOG_ERROR, NULL, "%s: cannot listen on %s: %s", proto, addr,
               strerror(errno));
        free(l);
        return NULL;
    }
    evconnlistener_set_error_cb(l->el, on_accept_error);
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    getsockname(evconnlistener_get_fd(l->el), (struct sockaddr *)&bound, &blen);
    describe(l, (struct sockaddr *)&bound);
    zf_log(ZF_LOG_INFO, NULL, "%s: listening on %s", proto, l->addr);
    return l;
}

void zf_listener_free(struct zf_listener *l)
{
    if (!l)
        return;
    if (l->el)
        evconnlistener_free(l->el);
    if (l->retry)
        event_free(l->retry);
    free(l);
}

/* ------------------------------------------------------ cross-thread calls */

struct loop_call {
    struct loop_call *next;
    zf_loop_fn fn;
    void *arg;
};

static struct {
    pthread_mutex_t lock;
    struct loop_call *head, *tail;
    struct event *ev;
} calls = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void on_calls(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    pthread_mutex_lock(&calls.lock);
    struct loop_call *c = calls.head;
    calls.head = calls.tail = NULL;
    pthread_mutex_unlock(&calls.lock);
    while (c) {
        struct loop_call *next = c->next;
        c->fn(c->arg);
        free(c);
        c = next;
    }
}

int zf_loop_call(zf_loop_fn fn, void *arg)
{
    struct loop_call *c = malloc(sizeof *c);
    if (!c)
        return ZF_ERROR;
    c->next = NULL;
    c->fn = fn;
    c->arg = arg;
    pthread_mutex_lock(&calls.lock);
    if (!calls.ev) { /* the loop is gone (shutdown): nobody would run it */
        pthread_mutex_unlock(&calls.lock);
        free(c);
        return ZF_ERROR;
    }
    if (calls.tail)
        calls.tail->next = c;
    else
        calls.head = c;
    calls.tail = c;
    event_active(calls.ev, EV_READ, 0);
    pthread_mutex_unlock(&calls.lock);
    return ZF_OK;
}

static const struct zf_upgrade *upgrades[4];
static size_t nupgrades;

int zf_upgrade_register(const struct zf_upgrade *u)
{
    for (size_t i = 0; i < nupgrades; i++)
        if (upgrades[i] == u)
            return ZF_OK;
    if (nupgrades == ZF_ARRAY_LEN(upgrades))
        return ZF_ERROR;
    upgrades[nupgrades++] = u;
    return ZF_OK;
}

const struct zf_upgrade *zf_upgrade_find(const char *token, size_t len)
{
    for (size_t i = 0; i < nupgrades; i++)
        if (strlen(upgrades[i]->token) == len && strncasecmp(upgrades[i]->token, token, len) == 0)
            return upgrades[i];
    return NULL;
}

int zf_upgrade_pipes(void)
{
    for (size_t i = 0; i < nupgrades; i++)
        if (upgrades[i]->start_pipe)
            return 1;
    return 0;
}

int zf__server_init_loop(struct zf_server *srv)
{
    calls.ev = event_new(srv->base, -1, 0, on_calls, NULL);
    return calls.ev ? ZF_OK : ZF_ERROR;
}

void zf__server_free_loop(void)
{
    pthread_mutex_lock(&calls.lock);
    struct event *ev = calls.ev;
    calls.ev = NULL;
    pthread_mutex_unlock(&calls.lock);
    if (ev) {
        on_calls(-1, 0, NULL); /* run what is left so nothing leaks */
        event_free(ev);
    }
    if (shutdown_timer)
        event_free(shutdown_timer);
    shutdown_timer = NULL;
}

/* --------------------------------------------------------------- shutdown */

static size_t active_total(void)
{
    size_t n = 0;
    for (size_t i = 0; i < zf_srv->nactive; i++)
        if (zf_srv->active[i]->active)
            n += zf_srv->active[i]->active(zf_srv);
    return n;
}

static void stop_modules(int graceful)
{
    for (size_t i = 0; i < zf_srv->nactive; i++)
        if (zf_srv->active[i]->stop)
            zf_srv->active[i]->stop(zf_srv, graceful);
}

static void on_shutdown_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    zf_log(ZF_LOG_WARN, NULL, "shutdown timeout: closing %zu connection(s) still open",
           active_total());
    stop_modules(0);
    zf_srv->state = ZF_STOPPED;
    event_base_loopexit(zf_srv->base, NULL);
}

void zf_server_check_idle(void)
{
    if (zf_srv->state == ZF_STOPPING && active_total() == 0) {
        zf_log(ZF_LOG_INFO, NULL, "all connections closed");
        zf_srv->state = ZF_STOPPED;
        event_base_loopexit(zf_srv->base, NULL);
    }
}

void zf_server_shutdown(int graceful)
{
    if (zf_srv->state == ZF_STOPPED)
        return;
    if (zf_srv->state == ZF_STOPPING) {
        if (!graceful) {
            stop_modules(0);
            zf_srv->state = ZF_STOPPED;
            event_base_loopexit(zf_srv->base, NULL);
        }
        return;
    }
    zf_srv->state = ZF_STOPPING;
    zf_log(ZF_LOG_INFO, NULL, "shutting down%s", graceful ? " gracefully" : "");
    stop_modules(graceful);
    if (!graceful) {
        zf_srv->state = ZF_STOPPED;
        event_base_loopexit(zf_srv->base, NULL);
        return;
    }
    uint64_t ms = zf_cfg.shutdown_timeout_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    shutdown_timer = evtimer_new(zf_srv->base, on_shutdown_timeout, NULL);
    if (shutdown_timer)
        evtimer_add(shutdown_timer, &tv);
    zf_server_check_idle();
}
