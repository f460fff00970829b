/* The bus module (bus.h): [bus] keys, the sockets, the ZMQ_FD events in the
 * shared loop, sending this instance's events and injecting the others'. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "../core/hub.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "../core/server.h"
#include "bus.h"

struct zf_bus_config zf_bus_cfg;

static const struct zf_cfg_key bus_keys[] = {
    {"bus.dir", ZF_CFG_STR, &zf_bus_cfg.dir, "", "--bus-dir",
     "Directory of the ipc:// sockets of this host's instances: each binds DIR/NAME.sock and "
     "subscribes to every other socket there (found by a rescan every bus.rescan_interval). "
     "Empty: no local bus. The socket paths must fit in 107 bytes."},
    {"bus.instance_name", ZF_CFG_STR, &zf_bus_cfg.instance_name, "", "--instance-name",
     "This instance's name on the bus (letters, digits, '.', '_', '-'; at most 64): its "
     "socket is DIR/NAME.sock. Empty: zfront-PID. Give a stable name so that a restarted "
     "instance takes its own place back."},
    {"bus.endpoints", ZF_CFG_LIST, &zf_bus_cfg.endpoints, NULL, "--bus-endpoint",
     "Endpoints of instances on other hosts to subscribe to (\"tcp://10.0.0.5:5601\": "
     "their bus.listen)."},
    {"bus.listen", ZF_CFG_LIST, &zf_bus_cfg.listen, NULL, "--bus-listen",
     "Extra endpoints this instance publishes on (\"tcp://10.0.0.4:5601\"), for instances "
     "on other hosts that list it in their bus.endpoints."},
    {"bus.forwarders", ZF_CFG_LIST, &zf_bus_cfg.forwarders, NULL, "--bus-via",
     "Forwarders to join (\"tcp://10.0.0.9:5601\"): subscribe at that port, publish at the "
     "next one. See --bus-forwarder."},
    {"bus.forwarder", ZF_CFG_STR, &zf_bus_cfg.forwarder, "", "--bus-forwarder",
     "Run as a bus forwarder only, no server: zmq_proxy from publishers connecting to "
     "PORT+1 to subscribers connecting to PORT of this tcp://HOST:PORT address."},
    {"bus.hwm", ZF_CFG_INT, &zf_bus_cfg.hwm, "100000", NULL,
     "Messages queued per peer, each way (ZMQ_SNDHWM/ZMQ_RCVHWM); beyond it a slow peer "
     "misses messages, counted as sequence gaps by that peer."},
    {"bus.rescan_interval", ZF_CFG_MSEC, &zf_bus_cfg.rescan_ms, "500ms", NULL,
     "How often bus.dir is rescanned for instances that started or stopped, and for socket "
     "files of dead instances (removed when nobody listens on them twice in a row)."},
    {"bus.heartbeat_interval", ZF_CFG_MSEC, &zf_bus_cfg.heartbeat_ms, "1s", NULL,
     "How often an instance that has sent events tells its peers its last sequence (topic "
     "zfront/bus/heartbeat), so messages lost at the end of a burst (bus.hwm) are counted as "
     "a gap without waiting for its next event; 0: never."},
    {"bus.max_topic", ZF_CFG_INT, &zf_bus_cfg.max_topic, "1024", NULL,
     "Longest topic (bytes) sent to or accepted from peers: a longer one from a peer is "
     "dropped as malformed, a longer local one stays on this instance (counted in send_failed)."},
    {"bus.max_origins", ZF_CFG_INT, &zf_bus_cfg.max_origins, "1024", NULL,
     "Origins (instance starts) whose message sequence is followed for gaps and duplicates; "
     "beyond it the least recently heard is forgotten."},
    {"bus.curve_secret_key", ZF_CFG_STR, &zf_bus_cfg.curve_secret_key, "", NULL,
     "File holding a CURVE secret key (z85, 40 characters): every bus connection is then "
     "encrypted and authenticated; instances sharing the key pair accept each other."},
    {"bus.curve_server_key", ZF_CFG_STR, &zf_bus_cfg.curve_server_key, "", NULL,
     "File holding the public key (z85) of the instances and forwarders this one connects "
     "to, when it is not the public half of bus.curve_secret_key."},
    {"bus.curve_clients", ZF_CFG_STR, &zf_bus_cfg.curve_clients, "", NULL,
     "File of client public keys (z85, one a line) allowed to connect besides the public half "
     "of bus.curve_secret_key."},
    {NULL, 0, NULL, NULL, NULL, NULL},
};

/* One origin (an instance start) heard from: its sequence so far. */
struct origin {
    uint64_t epoch;
    uint64_t last_seq;
    uint64_t heard; /* tick of the last message, for eviction */
    char name[ZF_BUS_MAX_NAME + 1];
};

static struct {
    int running;
    void *ctx;
    void *pub;     /* XPUB: bound to DIR/NAME.sock and bus.listen (CURVE server) */
    void *fwd_pub; /* XPUB connected to forwarders (CURVE client), or NULL */
    void *sub;     /* SUB connected to peers, endpoints and forwarders */
    void *zap;     /* ZAP handler when CURVE is on */
    struct event *pub_ev, *fwd_ev, *sub_ev, *zap_ev, *rescan_ev;
    struct event *sub_more; /* zero-timeout timer: the next batch of on_sub */
    struct event *heartbeat_ev;
    uint64_t heartbeat_seq; /* bus.seq when the last heartbeat went out */
    int heartbeats_quiet;   /* heartbeats sent since the last event */
    struct zf_hub_subscriber hubsub;
    struct zf__bus_curve curve;
    char name[ZF_BUS_MAX_NAME + 1];
    char *own_path; /* DIR/NAME.sock, or NULL */
    ino_t own_ino;
    uint64_t seq; /* last sequence sent */
    struct origin *origins;
    size_t norigins;
    uint64_t tick;
} bus;

static struct zf_bus_stats stats;

#define STAT_ADD(f, n) __atomic_fetch_add(&stats.f, (n), __ATOMIC_RELAXED)
#define STAT_SUB(f, n) __atomic_fetch_sub(&stats.f, (n), __ATOMIC_RELAXED)

int zf_bus_get_stats(struct zf_bus_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!__atomic_load_n(&bus.running, __ATOMIC_RELAXED))
        return ZF_DECLINED;
    const uint64_t *src = (const uint64_t *)&stats;
    uint64_t *dst = (uint64_t *)st;
    for (size_t i = 0; i < sizeof stats / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    return ZF_OK;
}

int zf_bus_forwarder_wanted(void)
{
    return zf_bus_cfg.forwarder && *zf_bus_cfg.forwarder;
}

/* ------------------------------------------------------------ peers.c's view */

void *zf__bus_sub(void)
{
    return bus.sub;
}

const char *zf__bus_own_path(void)
{
    return bus.own_path;
}

void zf__bus_stat_peers(int delta)
{
    if (delta > 0)
        STAT_ADD(peers, (uint64_t)delta);
    else
        STAT_SUB(peers, (uint64_t)-delta);
}

void zf__bus_stat_stale(void)
{
    STAT_ADD(stale_removed, 1);
}

/* The SUB socket's edge may have been consumed by a connect or disconnect:
 * look again from the loop. */
void zf__bus_kick(void)
{
    if (bus.sub_ev)
        event_active(bus.sub_ev, EV_READ, 0);
}

/* ------------------------------------------------------------ sending */

static int send_frame(void *sock, const void *p, size_t len, int more)
{
    return zmq_send(sock, p, len, ZMQ_DONTWAIT | (more ? ZMQ_SNDMORE : 0)) < 0 ? ZF_ERROR : ZF_OK;
}

static int send_msg(void *sock, struct zf_hub_event *ev, const unsigned char *head, const char *aud,
                    size_t alen)
{
    if (send_frame(sock, ev->topic, strlen(ev->topic), 1) != ZF_OK ||
        send_frame(sock, head, ZF_BUS_HEADER_LEN, 1) != ZF_OK ||
        send_frame(sock, bus.name, strlen(bus.name), 1) != ZF_OK ||
        send_frame(sock, aud, alen, 1) != ZF_OK || send_frame(sock, ev->data, ev->len, 0) != ZF_OK)
        return ZF_ERROR;
    return ZF_OK;
}

/* Heartbeat timer: tells the peers the last sequence sent, when events
 * were sent since the last heartbeat and a while after (a peer that missed
 * the tail of a burst counts the gap from it). Same format as an event:
 * topic ZF_BUS_HEARTBEAT_TOPIC, id = seq, no audience, payload null. */
static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    if (bus.seq == 0)
        return;
    /* after the last event, three more beats, then quiet */
    if (bus.seq == bus.heartbeat_seq && ++bus.heartbeats_quiet > 3)
        return;
    if (bus.seq != bus.heartbeat_seq)
        bus.heartbeats_quiet = 0;
    bus.heartbeat_seq = bus.seq;
    unsigned char head[ZF_BUS_HEADER_LEN];
    zf_bus_header(head, zf_hub_epoch(), bus.seq, bus.seq);
    struct zf_hub_event hb = {.topic = (char *)ZF_BUS_HEARTBEAT_TOPIC, .data = "null", .len = 4};
    send_msg(bus.pub, &hb, head, "", 0);
    if (bus.fwd_pub)
        send_msg(bus.fwd_pub, &hb, head, "", 0);
    event_active(bus.pub_ev, EV_READ, 0);
    if (bus.fwd_ev)
        event_active(bus.fwd_ev, EV_READ, 0);
}

/* Hub delivery: sends the events this instance gave a position; the others
 * came from the bus (or will reach every instance from their own origin).
 * Instance-local topics ("zfront/...", e.g. the status page's) stay here. */
static void on_event(struct zf_hub_subscriber *s, struct zf_hub_event *ev)
{
    if (ev->origin != zf_hub_epoch() || zf_hub_topic_is_local(ev->topic))
        return;
    if (strlen(ev->topic) > (size_t)zf_bus_cfg.max_topic) {
        /* the peers would drop it as malformed: say so here (the first time) */
        if (STAT_ADD(send_failed, 1) == 0)
            zf_log(ZF_LOG_WARN, NULL,
                   "bus: a topic of %zu bytes is over bus.max_topic: "
                   "the event stays on this instance",
                   strlen(ev->topic));
        return;
    }
    size_t alen;
    char *aud = zf_bus_audience_join(ev->audience, &alen);
    if (!aud) {
        STAT_ADD(send_failed, 1);
        return;
    }
    unsigned char head[ZF_BUS_HEADER_LEN];
    zf_bus_header(head, ev->origin, ++bus.seq, ev->id);
    /* PUB never blocks: at the HWM a slow peer misses the message (its
     * sequence gap tells it). A multipart message goes out whole or not. */
    int rc = send_msg(bus.pub, ev, head, aud, alen);
    if (rc == ZF_OK && bus.fwd_pub)
        rc = send_msg(bus.fwd_pub, ev, head, aud, alen);
    free(aud);
    if (rc != ZF_OK) {
        STAT_ADD(send_failed, 1);
        zf_log(ZF_LOG_WARN, NULL, "bus: cannot send the event on \"%s\": %s", ev->topic,
               zmq_strerror(errno));
        return;
    }
    STAT_ADD(sent, 1);
    /* the send may have taken the XPUB's edge (subscriptions to read) */
    event_active(bus.pub_ev, EV_READ, 0);
    if (bus.fwd_ev)
        event_active(bus.fwd_ev, EV_READ, 0);
}

/* ------------------------------------------------------------ receiving */

static struct origin *find_origin(uint64_t epoch)
{
    for (size_t i = 0; i < bus.norigins; i++)
        if (bus.origins[i].epoch == epoch)
            return &bus.origins[i];
    return NULL;
}

/* A new origin's slot: a free one, else the least recently heard. */
static struct origin *new_origin(const struct zf_bus_msg *m)
{
    int restarted = 0;
    for (size_t i = 0; m->name_len && i < bus.norigins; i++)
        if (strlen(bus.origins[i].name) == m->name_len &&
            memcmp(bus.origins[i].name, m->name, m->name_len) == 0)
            restarted = 1;
    size_t max = zf_bus_cfg.max_origins > 0 ? (size_t)zf_bus_cfg.max_origins : 1;
    struct origin *o = NULL;
    if (bus.norigins < max) {
        o = &bus.origins[bus.norigins++];
    } else {
        o = &bus.origins[0];
        for (size_t i = 1; i < bus.norigins; i++)
            if (bus.origins[i].heard < o->heard)
                o = &bus.origins[i];
    }
    memset(o, 0, sizeof *o);
    o->epoch = m->epoch;
    memcpy(o->name, m->name, m->name_len);
    o->name[m->name_len] = 0;
    STAT_ADD(origins, 1);
    if (restarted)
        STAT_ADD(restarts, 1);
    zf_log(ZF_LOG_INFO, NULL, "bus: hearing instance \"%s\" (origin %llx%s)", o->name,
           (unsigned long long)o->epoch,
           restarted ? ", restarted: what it published while down is missed" : "");
    return o;
}

/* Follows the origin's sequence. `last` is what the message says was
 * sent last: its own sequence for an event (seq - 1 were sent before it),
 * the whole of it for a heartbeat (every message up to seq was sent).
 * Returns ZF_OK (an event to inject), or ZF_DECLINED for an event already
 * seen. */
static int check_sequence(const struct zf_bus_msg *m, int is_heartbeat)
{
    struct origin *o = find_origin(m->epoch);
    if (!o) {
        o = new_origin(m);
    } else if (m->seq < o->last_seq || (m->seq == o->last_seq && !is_heartbeat)) {
        return ZF_DECLINED;
    } else {
        uint64_t expected = is_heartbeat ? o->last_seq : o->last_seq + 1;
        if (m->seq > expected) {
            STAT_ADD(gaps, 1);
            STAT_ADD(missed, m->seq - expected);
            zf_log(ZF_LOG_WARN, NULL,
                   "bus: %llu message(s) of instance \"%s\" missed (%s %llu after %llu)",
                   (unsigned long long)(m->seq - expected), o->name,
                   is_heartbeat ? "heartbeat at sequence" : "sequence", (unsigned long long)m->seq,
                   (unsigned long long)o->last_seq);
        }
    }
    o->last_seq = m->seq;
    o->heard = ++bus.tick;
    return ZF_OK;
}

static void malformed(const char *why)
{
    uint64_t n = STAT_ADD(dropped_malformed, 1) + 1;
    /* a peer sending garbage must not flood the log: 1st, 2nd, 4th, 8th... */
    if ((n & (n - 1)) == 0)
        zf_log(ZF_LOG_WARN, NULL, "bus: malformed message dropped (%s); %llu so far", why,
               (unsigned long long)n);
}

static void handle(zmq_msg_t *frames, size_t n)
{
    struct zf_bus_frame f[ZF_BUS_NFRAMES];
    for (size_t i = 0; i < n && i < ZF_BUS_NFRAMES; i++) {
        f[i].p = zmq_msg_data(&frames[i]);
        f[i].len = zmq_msg_size(&frames[i]);
    }
    struct zf_bus_limits lim = {(size_t)zf_bus_cfg.max_topic, (size_t)zf_hub_cfg.max_event};
    struct zf_bus_msg m;
    const char *why;
    if (zf_bus_decode(f, n, &lim, &m, &why) != ZF_OK) {
        malformed(why);
        return;
    }
    if (m.epoch == zf_hub_epoch())
        return; /* our own, back through a forwarder */
    /* a heartbeat (the origin's last sequence) counts a lost tail now, as
     * the next event would; it is not an event */
    if (m.topic_len == sizeof ZF_BUS_HEARTBEAT_TOPIC - 1 &&
        memcmp(m.topic, ZF_BUS_HEARTBEAT_TOPIC, m.topic_len) == 0) {
        check_sequence(&m, 1);
        return;
    }
    if (check_sequence(&m, 0) != ZF_OK) {
        STAT_ADD(duplicates, 1);
        return;
    }
    int oom = 0;
    char *topic = strndup(m.topic, m.topic_len);
    char **aud = zf_bus_audience_split(m.audience, m.audience_len, &oom);
    struct zf_hub_event *ev =
        topic && !oom ? zf_hub_event_new(topic, m.data, m.len, (const char *const *)aud) : NULL;
    free(topic);
    for (size_t i = 0; aud && aud[i]; i++)
        free(aud[i]);
    free(aud);
    if (!ev) {
        zf_log(ZF_LOG_ERROR, NULL, "bus: out of memory: a received event is dropped");
        return;
    }
    ev->origin = m.epoch;
    ev->id = m.id;
    int rc = zf_hub_inject(ev);
    zf_hub_event_unref(ev);
    if (rc == ZF_DECLINED)
        STAT_ADD(duplicates, 1);
    else
        STAT_ADD(received, 1);
}

/* Receives one whole message (at most ZF_BUS_NFRAMES frames kept; the rest
 * read and counted). Returns ZF_OK, or ZF_AGAIN when none was waiting. */
static int recv_one(void)
{
    zmq_msg_t frames[ZF_BUS_NFRAMES + 1];
    size_t n = 0;
    int more = 1;
    while (more) {
        zmq_msg_t *fr = &frames[n < ZF_BUS_NFRAMES ? n : ZF_BUS_NFRAMES];
        zmq_msg_init(fr);
        if (zmq_msg_recv(fr, bus.sub, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(fr);
            if (n == 0)
                return ZF_AGAIN;
            break; /* cannot happen: the parts of a message arrive together */
        }
        more = zmq_msg_more(fr);
        if (n >= ZF_BUS_NFRAMES)
            zmq_msg_close(fr);
        n++;
    }
    handle(frames, n);
    for (size_t i = 0; i < n && i < ZF_BUS_NFRAMES; i++)
        zmq_msg_close(&frames[i]);
    return ZF_OK;
}

static int has_input(void *sock)
{
    int events = 0;
    size_t len = sizeof events;
    return zmq_getsockopt(sock, ZMQ_EVENTS, &events, &len) == 0 && (events & ZMQ_POLLIN);
}

/* ZMQ_FD is edge-triggered: read until ZMQ_EVENTS says nothing is left, at
 * most a batch per loop turn (then come back, so HTTP is not starved). */
/* Receives at most ZF_BUS_RECV_BATCH messages, then lets the loop poll
 * before the next batch. The next batch is a zero-timeout timer, not
 * event_active: libevent runs an event activated from its own callback in
 * the same pass, without polling, so a peer publishing without pause would
 * keep the loop here and nothing delivered would be written out (a
 * WebSocket client then looks like a slow consumer). Timers fire after the
 * poll, with the sockets that became writable. */
#define ZF_BUS_RECV_BATCH 1024
static void on_sub(evutil_socket_t fd, short what, void *arg)
{
    for (int i = 0; i < ZF_BUS_RECV_BATCH; i++) {
        if (!has_input(bus.sub) || recv_one() != ZF_OK)
            return;
    }
    static const struct timeval now = {0, 0};
    evtimer_add(bus.sub_more, &now);
}

/* Subscriptions reaching one of our XPUBs (verbose: one per peer, or one
 * per forwarder): counted, so "subscribers" says how many peers listen. */
static void on_pub(evutil_socket_t fd, short what, void *arg)
{
    void *sock = arg == &bus.fwd_pub ? bus.fwd_pub : bus.pub;
    struct event *ev = arg == &bus.fwd_pub ? bus.fwd_ev : bus.pub_ev;
    for (int i = 0; i < 4096; i++) {
        if (!has_input(sock))
            return;
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        const unsigned char *p = zmq_msg_data(&m);
        if (zmq_msg_size(&m) >= 1 && p[0] == 1)
            STAT_ADD(subscribers, 1);
        else if (zmq_msg_size(&m) >= 1 && p[0] == 0 &&
                 __atomic_load_n(&stats.subscribers, __ATOMIC_RELAXED) > 0)
            STAT_SUB(subscribers, 1);
        zmq_msg_close(&m);
    }
    event_active(ev, EV_READ, 0);
}

static void on_zap(evutil_socket_t fd, short what, void *arg)
{
    for (int i = 0; i < 256; i++)
        if (zf__bus_zap_serve(bus.zap, &bus.curve, ZMQ_DONTWAIT) != ZF_OK)
            return;
    event_active(bus.zap_ev, EV_READ, 0);
}

static void on_rescan(evutil_socket_t fd, short what, void *arg)
{
    zf__bus_rescan();
}

/* ------------------------------------------------------------ life */

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > ZF_BUS_MAX_NAME || s[0] == '.')
        return 0;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

static int bus_configure(struct zf_server *srv)
{
    if (!zf_bus_cfg.dir[0] && !zf_bus_cfg.endpoints.n && !zf_bus_cfg.listen.n &&
        !zf_bus_cfg.forwarders.n)
        return ZF_DECLINED;
    if (zf_bus_cfg.instance_name[0])
        snprintf(bus.name, sizeof bus.name, "%s", zf_bus_cfg.instance_name);
    else
        snprintf(bus.name, sizeof bus.name, "zfront-%ld", (long)getpid());
    if (!name_ok(zf_bus_cfg.instance_name[0] ? zf_bus_cfg.instance_name : bus.name)) {
        zf_log(ZF_LOG_ERROR, NULL,
               "bus.instance_name \"%s\": use 1 to %d letters, digits, '.', '_' or '-' "
               "(not starting with '.')",
               zf_bus_cfg.instance_name, ZF_BUS_MAX_NAME);
        return ZF_ERROR;
    }
    if (zf_bus_cfg.dir[0]) {
        size_t len = strlen(zf_bus_cfg.dir) + 1 + strlen(bus.name) + 5;
        if (len > 107) {
            zf_log(ZF_LOG_ERROR, NULL,
                   "bus: the ipc socket path %s/%s.sock is %zu bytes; a unix socket path takes "
                   "at most 107: choose a shorter bus.dir or bus.instance_name",
                   zf_bus_cfg.dir, bus.name, len);
            return ZF_ERROR;
        }
    }
    for (size_t i = 0; i < zf_bus_cfg.forwarders.n; i++) {
        char url[256];
        if (zf__bus_port_plus(zf_bus_cfg.forwarders.v[i], 1, url, sizeof url) != ZF_OK) {
            zf_log(ZF_LOG_ERROR, NULL, "bus.forwarders: \"%s\" is not tcp://HOST:PORT",
                   zf_bus_cfg.forwarders.v[i]);
            return ZF_ERROR;
        }
    }
    if (zf_bus_cfg.hwm < 0 || zf_bus_cfg.max_topic < 1 || zf_bus_cfg.max_origins < 1 ||
        zf_bus_cfg.rescan_ms == 0) {
        zf_log(ZF_LOG_ERROR, NULL,
               "bus: hwm must be >= 0, max_topic, max_origins and "
               "rescan_interval > 0");
        return ZF_ERROR;
    }
    return zf__bus_curve_load(&bus.curve);
}

static int set_int(void *sock, int opt, int v)
{
    return zmq_setsockopt(sock, opt, &v, sizeof v) == 0 ? ZF_OK : ZF_ERROR;
}

/* Common options: HWM both ways, no linger on close (a stop never waits for
 * a peer), reconnects backing off to 2 s, frames no larger than an event. */
static void *new_socket(int type)
{
    void *s = zmq_socket(bus.ctx, type);
    if (!s)
        return NULL;
    int64_t maxsize = (int64_t)zf_hub_cfg.max_event + 4096;
    set_int(s, ZMQ_SNDHWM, (int)zf_bus_cfg.hwm);
    set_int(s, ZMQ_RCVHWM, (int)zf_bus_cfg.hwm);
    set_int(s, ZMQ_LINGER, 0);
    set_int(s, ZMQ_RECONNECT_IVL_MAX, 2000);
    if (zf_hub_cfg.max_event)
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxsize, sizeof maxsize);
    return s;
}

static struct event *watch(void *sock, event_callback_fn cb, void *arg)
{
    int fd;
    size_t len = sizeof fd;
    if (zmq_getsockopt(sock, ZMQ_FD, &fd, &len) != 0)
        return NULL;
    struct event *ev = event_new(zf_srv->base, fd, EV_READ | EV_PERSIST, cb, arg);
    if (!ev)
        return NULL;
    event_add(ev, NULL);
    event_active(ev, EV_READ, 0); /* an edge may have passed already */
    return ev;
}

/* Binds our XPUB at DIR/NAME.sock, after making sure no live instance
 * holds that name (binding would silently take its socket over) and
 * removing the file a dead one left. */
static int bind_own(void)
{
    if (mkdir(zf_bus_cfg.dir, 0770) != 0 && errno != EEXIST) {
        zf_log(ZF_LOG_ERROR, NULL, "bus: cannot create bus.dir %s: %s", zf_bus_cfg.dir,
               strerror(errno));
        return ZF_ERROR;
    }
    size_t n = strlen(zf_bus_cfg.dir) + strlen(bus.name) + 8;
    bus.own_path = zf_xmalloc(n);
    snprintf(bus.own_path, n, "%s/%s.sock", zf_bus_cfg.dir, bus.name);
    struct stat st;
    if (lstat(bus.own_path, &st) == 0) {
        if (zf__bus_probe(bus.own_path) == ZF_OK) {
            zf_log(ZF_LOG_ERROR, NULL,
                   "bus: instance name \"%s\" is in use: another process "
                   "listens on %s",
                   bus.name, bus.own_path);
            free(bus.own_path);
            bus.own_path = NULL;
            return ZF_ERROR;
        }
        zf_log(ZF_LOG_INFO, NULL, "bus: removing %s, left by a dead instance", bus.own_path);
        unlink(bus.own_path);
    }
    char url[160];
    snprintf(url, sizeof url, "ipc://%s", bus.own_path);
    if (zmq_bind(bus.pub, url) != 0) {
        zf_log(ZF_LOG_ERROR, NULL, "bus: cannot bind %s: %s", url, zmq_strerror(errno));
        free(bus.own_path);
        bus.own_path = NULL;
        return ZF_ERROR;
    }
    if (lstat(bus.own_path, &st) == 0)
        bus.own_ino = st.st_ino;
    zf_log(ZF_LOG_INFO, NULL, "bus: instance \"%s\" publishing on %s", bus.name, url);
    return ZF_OK;
}

static int connect_or_bind(void *sock, const char *url, int bind, const char *what)
{
    int rc = bind ? zmq_bind(sock, url) : zmq_connect(sock, url);
    if (rc != 0) {
        zf_log(ZF_LOG_ERROR, NULL, "bus: cannot %s %s (%s): %s", bind ? "bind" : "connect", url,
               what, zmq_strerror(errno));
        return ZF_ERROR;
    }
    zf_log(ZF_LOG_INFO, NULL, "bus: %s %s (%s)", bind ? "publishing on" : "connected to", url,
           what);
    return ZF_OK;
}

static int open_sockets(void)
{
    bus.pub = new_socket(ZMQ_XPUB);
    bus.sub = new_socket(ZMQ_SUB);
    if (!bus.pub || !bus.sub)
        return ZF_ERROR;
    set_int(bus.pub, ZMQ_XPUB_VERBOSER, 1);
    if (zmq_setsockopt(bus.sub, ZMQ_SUBSCRIBE, "", 0) != 0)
        return ZF_ERROR;
    if (bus.curve.on) {
        if (!(bus.zap = zf__bus_zap_open(bus.ctx)) ||
            zf__bus_curve_apply(bus.pub, &bus.curve, 1) != ZF_OK ||
            zf__bus_curve_apply(bus.sub, &bus.curve, 0) != ZF_OK)
            return ZF_ERROR;
    }
    if (zf_bus_cfg.forwarders.n) {
        if (!(bus.fwd_pub = new_socket(ZMQ_XPUB)))
            return ZF_ERROR;
        set_int(bus.fwd_pub, ZMQ_XPUB_VERBOSER, 1);
        if (bus.curve.on && zf__bus_curve_apply(bus.fwd_pub, &bus.curve, 0) != ZF_OK)
            return ZF_ERROR;
    }
    if (zf_bus_cfg.dir[0] && bind_own() != ZF_OK)
        return ZF_ERROR;
    for (size_t i = 0; i < zf_bus_cfg.listen.n; i++)
        if (connect_or_bind(bus.pub, zf_bus_cfg.listen.v[i], 1, "bus.listen") != ZF_OK)
            return ZF_ERROR;
    for (size_t i = 0; i < zf_bus_cfg.endpoints.n; i++) {
        if (connect_or_bind(bus.sub, zf_bus_cfg.endpoints.v[i], 0, "bus.endpoints") != ZF_OK)
            return ZF_ERROR;
        STAT_ADD(peers, 1);
    }
    for (size_t i = 0; i < zf_bus_cfg.forwarders.n; i++) {
        char url[256];
        zf__bus_port_plus(zf_bus_cfg.forwarders.v[i], 1, url, sizeof url);
        if (connect_or_bind(bus.sub, zf_bus_cfg.forwarders.v[i], 0, "forwarder, subscribing") !=
                ZF_OK ||
            connect_or_bind(bus.fwd_pub, url, 0, "forwarder, publishing") != ZF_OK)
            return ZF_ERROR;
        STAT_ADD(peers, 1);
    }
    return ZF_OK;
}

static void close_sockets(void)
{
    void **socks[] = {&bus.pub, &bus.fwd_pub, &bus.sub, &bus.zap};
    for (size_t i = 0; i < ZF_ARRAY_LEN(socks); i++) {
        if (*socks[i]) {
            set_int(*socks[i], ZMQ_LINGER, 0);
            zmq_close(*socks[i]);
            *socks[i] = NULL;
        }
    }
}

/* Metrics collector (loop thread): the bus counters as Prometheus samples. */
static void bus_metrics(struct zf_metrics *m, void *arg)
{
    (void)arg;
    struct zf_bus_stats st;
    if (zf_bus_get_stats(&st) != ZF_OK)
        return;
    zf_metrics_gauge(m, "zfront_bus_peers", "Bus peers the SUB socket is connected to", NULL,
                     (double)st.peers);
    zf_metrics_gauge(m, "zfront_bus_subscribers",
                     "Peers whose subscriptions reached this instance's XPUB socket", NULL,
                     (double)st.subscribers);
    zf_metrics_counter(m, "zfront_bus_sent_total", "Events sent on the bus", NULL, st.sent);
    zf_metrics_counter(m, "zfront_bus_received_total", "Events received from the bus", NULL,
                       st.received);
    zf_metrics_counter(m, "zfront_bus_duplicates_total", "Bus events received twice", NULL,
                       st.duplicates);
    zf_metrics_counter(m, "zfront_bus_malformed_total",
                       "Bus messages dropped for not being in the bus format", NULL,
                       st.dropped_malformed);
    zf_metrics_counter(m, "zfront_bus_send_failed_total", "Events that could not be sent", NULL,
                       st.send_failed);
    zf_metrics_counter(m, "zfront_bus_gaps_total", "Per-origin sequence jumps seen", NULL, st.gaps);
    zf_metrics_counter(m, "zfront_bus_missed_total", "Bus messages skipped by sequence jumps", NULL,
                       st.missed);
    zf_metrics_counter(m, "zfront_bus_restarts_total",
                       "Known instances heard again with a new origin", NULL, st.restarts);
    zf_metrics_counter(m, "zfront_bus_stale_removed_total",
                       "Socket files of dead instances removed", NULL, st.stale_removed);
}

static struct timeval tv_of_ms(uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

static void bus_stop(struct zf_server *srv, int graceful);

static int bus_start(struct zf_server *srv)
{
    bus.ctx = zmq_ctx_new();
    if (!bus.ctx) {
        zf_log(ZF_LOG_ERROR, NULL, "bus: cannot create a ZeroMQ context: %s", zmq_strerror(errno));
        return ZF_ERROR;
    }
    bus.origins = zf_xcalloc((size_t)zf_bus_cfg.max_origins, sizeof *bus.origins);
    if (open_sockets() != ZF_OK) {
        if (errno)
            zf_log(ZF_LOG_ERROR, NULL, "bus: cannot set up the sockets: %s", zmq_strerror(errno));
        bus_stop(srv, 0);
        return ZF_ERROR;
    }
    if (!(bus.pub_ev = watch(bus.pub, on_pub, &bus.pub)) ||
        !(bus.sub_more = evtimer_new(srv->base, on_sub, NULL)) ||
        !(bus.sub_ev = watch(bus.sub, on_sub, NULL)) ||
        (bus.fwd_pub && !(bus.fwd_ev = watch(bus.fwd_pub, on_pub, &bus.fwd_pub))) ||
        (bus.zap && !(bus.zap_ev = watch(bus.zap, on_zap, NULL)))) {
        zf_log(ZF_LOG_ERROR, NULL, "bus: cannot watch the sockets in the loop");
        bus_stop(srv, 0);
        return ZF_ERROR;
    }
    if (zf_bus_cfg.dir[0]) {
        bus.rescan_ev = event_new(srv->base, -1, EV_PERSIST, on_rescan, NULL);
        struct timeval tv = tv_of_ms(zf_bus_cfg.rescan_ms);
        event_add(bus.rescan_ev, &tv);
        zf__bus_rescan();
    }
    if (zf_bus_cfg.heartbeat_ms) {
        bus.heartbeat_ev = event_new(srv->base, -1, EV_PERSIST, on_heartbeat, NULL);
        struct timeval tv = tv_of_ms(zf_bus_cfg.heartbeat_ms);
        if (!bus.heartbeat_ev || event_add(bus.heartbeat_ev, &tv) != 0) {
            zf_log(ZF_LOG_ERROR, NULL, "bus: cannot start the heartbeat timer");
            bus_stop(srv, 0);
            return ZF_ERROR;
        }
    }
    zf_hub_subscriber_init(&bus.hubsub, on_event, NULL);
    bus.hubsub.all_audiences = 1;
    if (zf_hub_subscribe(&bus.hubsub, "*", NULL) != ZF_OK) {
        bus_stop(srv, 0);
        return ZF_ERROR;
    }
    __atomic_store_n(&bus.running, 1, __ATOMIC_RELAXED);
    zf_metrics_register(bus_metrics, NULL);
    return ZF_OK;
}

/* Closes everything at once: what is still queued for peers is dropped
 * (they count the gap); our socket file is removed if it is still ours. */
static void bus_stop(struct zf_server *srv, int graceful)
{
    if (!bus.ctx)
        return;
    __atomic_store_n(&bus.running, 0, __ATOMIC_RELAXED);
    zf_hub_unsubscribe_all(&bus.hubsub);
    struct event **evs[] = {&bus.pub_ev, &bus.fwd_ev,    &bus.sub_ev,      &bus.sub_more,
                            &bus.zap_ev, &bus.rescan_ev, &bus.heartbeat_ev};
    for (size_t i = 0; i < ZF_ARRAY_LEN(evs); i++) {
        if (*evs[i]) {
            event_free(*evs[i]);
            *evs[i] = NULL;
        }
    }
    zf__bus_peers_stop();
    close_sockets();
    zmq_ctx_term(bus.ctx);
    bus.ctx = NULL;
    struct stat st;
    if (bus.own_path && lstat(bus.own_path, &st) == 0 && st.st_ino == bus.own_ino)
        unlink(bus.own_path);
    free(bus.own_path);
    bus.own_path = NULL;
    free(bus.origins);
    bus.origins = NULL;
    bus.norigins = 0;
    zf__bus_curve_free(&bus.curve);
}

static void bus_stats(struct zf_server *srv, struct evbuffer *out)
{
    struct zf_bus_stats st;
    zf_bus_get_stats(&st);
    evbuffer_add_printf(out,
                        "bus.peers: %llu\nbus.subscribers: %llu\nbus.sent: %llu\n"
                        "bus.received: %llu\nbus.duplicates: %llu\nbus.dropped_malformed: %llu\n"
                        "bus.send_failed: %llu\nbus.gaps: %llu\nbus.missed: %llu\n"
                        "bus.origins: %llu\nbus.stale_removed: %llu\nbus.restarts: %llu\n",
                        (unsigned long long)st.peers, (unsigned long long)st.subscribers,
                        (unsigned long long)st.sent, (unsigned long long)st.received,
                        (unsigned long long)st.duplicates, (unsigned long long)st.dropped_malformed,
                        (unsigned long long)st.send_failed, (unsigned long long)st.gaps,
                        (unsigned long long)st.missed, (unsigned long long)st.origins,
                        (unsigned long long)st.stale_removed, (unsigned long long)st.restarts);
}

const struct zf_module zf_bus_module = {
    .name = "bus",
    .keys = bus_keys,
    .configure = bus_configure,
    .start = bus_start,
    .stop = bus_stop,
    .stats = bus_stats,
};
