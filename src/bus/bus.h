/* The bus: the topic hub of several zfront instances joined over ZeroMQ
 * PUB/SUB (libzmq), so an event published in any instance reaches the
 * subscribers of all of them.
 *
 * On one host there is no broker: each instance binds an XPUB socket at
 * ipc://DIR/NAME.sock and connects one SUB socket to the socket of every
 * other instance found in DIR (a periodic rescan finds new ones and drops
 * gone ones; socket files nobody listens on are removed). Between hosts the
 * same messages travel over tcp:// (bus.listen / bus.endpoints), directly or
 * through a forwarder process (`zfront --bus-forwarder`, zmq_proxy between
 * an XSUB and an XPUB socket). CURVE (libzmq's) optionally encrypts and
 * authenticates every connection.
 *
 * The bus is a hub subscriber of every topic and audience: it sends the
 * events this instance gave a position (origin == zf_hub_epoch()) and hands
 * the events of other origins to zf_hub_inject, keeping their position, so
 * a client's resume position is valid on every instance.
 *
 * Loop thread only, except zf_bus_get_stats. The wire format is in
 * docs/protocols/bus.md; codec.c encodes and checks it. */
#ifndef ZF_BUS_H
#define ZF_BUS_H

#include <stddef.h>
#include <stdint.h>

#include "../core/config.h"

/* [bus] settings. Owned by module.c. */
struct zf_bus_config {
    char *dir;                    /* ipc sockets of this host's instances; "" none */
    char *instance_name;          /* NAME of DIR/NAME.sock; "" zfront-PID */
    struct zf_strlist endpoints;  /* PUB endpoints of instances elsewhere (SUB connects) */
    struct zf_strlist listen;     /* extra endpoints our XPUB binds (tcp://) */
    struct zf_strlist forwarders; /* forwarders joined: SUB to PORT, PUB to PORT+1 */
    char *forwarder;              /* run as a forwarder only, on this address */
    long hwm;                     /* ZMQ_SNDHWM / ZMQ_RCVHWM, messages */
    uint64_t rescan_ms;           /* DIR rescan period */
    uint64_t heartbeat_ms;        /* heartbeat period (0: none) */
    long max_topic;               /* topic bytes accepted from peers */
    long max_origins;             /* origins whose sequence is tracked */
    char *curve_secret_key;       /* file: z85 secret key; turns CURVE on */
    char *curve_server_key;       /* file: z85 public key of the servers we connect to */
    char *curve_clients;          /* file: z85 public keys of clients allowed in */
};
extern struct zf_bus_config zf_bus_cfg;

/* What the bus has done since start. Counters only grow, except peers and
 * subscribers. Readable from any thread through zf_bus_get_stats. */
struct zf_bus_stats {
    uint64_t peers;             /* ipc peers and endpoints the SUB is connected to */
    uint64_t subscribers;       /* subscriptions that reached our XPUB (peers listening) */
    uint64_t sent;              /* messages sent */
    uint64_t received;          /* messages received and injected into the hub */
    uint64_t duplicates;        /* received twice (an older sequence of a known origin) */
    uint64_t dropped_malformed; /* received and dropped: not in the bus format */
    uint64_t send_failed;       /* could not be sent (out of memory, socket error) */
    uint64_t gaps;              /* per-origin sequence jumps seen */
    uint64_t missed;            /* messages skipped by those jumps */
    uint64_t origins;           /* origins (instance starts) heard from */
    uint64_t stale_removed;     /* socket files of dead instances removed */
    uint64_t restarts;          /* a known instance name heard with a new origin */
};

/* Copies the counters (relaxed atomic reads: any thread). Returns ZF_OK, or
 * ZF_DECLINED when the bus is not running (*st zeroed). */
int zf_bus_get_stats(struct zf_bus_stats *st);

/* main.c: true when the configuration asks for a forwarder only
 * (bus.forwarder); then zf_bus_forwarder_run replaces the server. */
int zf_bus_forwarder_wanted(void);
/* Runs the forwarder until SIGTERM/SIGINT. Returns the exit code. */
int zf_bus_forwarder_run(void);

/* ---- the message codec (codec.c): no libzmq, no hub ---- */

#define ZF_BUS_MAGIC "zfb1"
#define ZF_BUS_HEADER_LEN 28 /* magic, epoch, seq, id (u64 big-endian) */
#define ZF_BUS_NFRAMES 5     /* topic, header, instance name, audience, payload */
#define ZF_BUS_MAX_NAME 64
/* The topic of heartbeats: header with the last sequence sent, payload
 * null; never an event (topics under "zfront/" are instance-local). */
#define ZF_BUS_HEARTBEAT_TOPIC "zfront/bus/heartbeat"

struct zf_bus_frame {
    const void *p;
    size_t len;
};

/* A decoded message. Every pointer borrows from the frames. */
struct zf_bus_msg {
    const char *topic;
    size_t topic_len;
    uint64_t epoch, seq, id;
    const char *name;
    size_t name_len;
    const char *audience; /* tokens separated by '\n'; audience_len 0: everyone */
    size_t audience_len;
    const char *data; /* one JSON value as UTF-8 text */
    size_t len;
};

struct zf_bus_limits {
    size_t max_topic;
    size_t max_payload;
};

/* Checks n frames against the format and fills *m. Returns ZF_OK, or
 * ZF_ERROR with *why set to a static text naming what is wrong. */
int zf_bus_decode(const struct zf_bus_frame *f, size_t n, const struct zf_bus_limits *lim,
                  struct zf_bus_msg *m, const char **why);
/* Writes the header frame. */
void zf_bus_header(unsigned char out[ZF_BUS_HEADER_LEN], uint64_t epoch, uint64_t seq, uint64_t id);
/* Joins NULL-terminated tokens with '\n' into a new string (caller frees;
 * "" for NULL). NULL when out of memory. */
char *zf_bus_audience_join(char *const *tokens, size_t *len);
/* Splits a '\n'-separated audience frame into a NULL-terminated array of
 * new strings (caller frees each and the array); NULL when len is 0 or out
 * of memory (*oom set then). */
char **zf_bus_audience_split(const char *p, size_t len, int *oom);
/* True when p[0..len) is valid UTF-8 without control characters. */
int zf_bus_text_ok(const char *p, size_t len);

/* ---- internal: shared by module.c, peers.c, curve.c, forwarder.c ---- */

/* CURVE keys (z85 text, 40 characters + NUL) loaded from bus.curve_*. */
struct zf__bus_curve {
    int on;
    char secret[41], public_[41], server[41];
    char (*clients)[41]; /* allowed client public keys, besides public_ */
    size_t nclients;
};
/* Loads the key files. Returns ZF_OK (curve->on 0 when no secret key is
 * configured) or ZF_ERROR (logged). */
int zf__bus_curve_load(struct zf__bus_curve *c);
void zf__bus_curve_free(struct zf__bus_curve *c);
/* Makes sock a CURVE server (server=1) or client of c's server key.
 * Returns ZF_OK or ZF_ERROR (logged). */
int zf__bus_curve_apply(void *sock, const struct zf__bus_curve *c, int server);
/* Binds a ZAP handler (REP) in ctx. Returns the socket or NULL (logged). */
void *zf__bus_zap_open(void *ctx);
/* Answers one ZAP request waiting on zap (non-blocking). Returns ZF_OK,
 * or ZF_AGAIN when none was waiting. */
int zf__bus_zap_serve(void *zap, const struct zf__bus_curve *c, int flags);

/* module.c, for peers.c: the SUB socket, our own socket path (NULL when
 * no bus.dir), the peers counter, the stale-file counter, and a nudge to
 * look at the SUB socket again after a connect or disconnect (which may
 * have consumed its ZMQ_FD edge). */
void *zf__bus_sub(void);
const char *zf__bus_own_path(void);
void zf__bus_stat_peers(int delta);
void zf__bus_stat_stale(void);
void zf__bus_kick(void);
/* peers.c: one scan of bus.dir (loop thread), and forgetting every peer at
 * stop (the SUB socket is closed by the caller). */
void zf__bus_rescan(void);
void zf__bus_peers_stop(void);

/* Probes a unix socket file: ZF_OK someone listens, ZF_DECLINED nobody
 * does (ECONNREFUSED: stale), ZF_ERROR anything else (gone, not a socket). */
int zf__bus_probe(const char *path);
/* "tcp://host:port" with port + delta written to out. Returns ZF_OK or
 * ZF_ERROR (not tcp://...:PORT). */
int zf__bus_port_plus(const char *url, int delta, char *out, size_t n);

#endif
