/* HTTP/1.1 internals shared by the two halves of the HTTP/1.1 module:
 * http1.c (connections, input, responses, closing, module hooks) and
 * h1_parse.c (request parsing: libhttp-parser's callbacks and the framing
 * checks its non-strict Debian build leaves to us). Nothing outside
 * src/proto/http/ includes this; the module's interface is http.h.
 * Loop thread only. */
#ifndef ZF_H1_H
#define ZF_H1_H

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <http_parser.h>
#include <stdint.h>
#include <time.h>

#include "../../core/exchange.h"
#include "../../core/spool.h"
#include "http.h"

enum {
    H1_OUT_HIGH = 256 * 1024, /* pull body segments while the output holds less */
    H1_OUT_LOW = 64 * 1024,   /* ... and pull again when it drained to this */
    H1_IN_MAX = 256 * 1024,   /* largest read; input buffered while a request is with the worker */
    H1_METHOD_MAX = 32,       /* longest method token */
    H1_PRESCAN = 64,          /* bytes looked at to find the method */
    H1_LINGER_MS = 2000,      /* reading (and dropping) input after our last byte */
    H1_FILE_SLICE = 1 << 19,  /* file bodies go to the output this much at a time */
    H1_SPLICE_MIN = 1 << 16,  /* a spooled body with less left is read the usual way */
    H1_SPLICE_PIPE = 1 << 20, /* pipe size asked for (F_SETPIPE_SZ) */
    H1_SPLICE_ROUNDS = 8,     /* splices per readiness, so other connections get their turn */
};

enum h1_state {
    H1_IDLE,   /* keep-alive: no byte of the next request yet */
    H1_HEAD,   /* reading the request line and header section */
    H1_BODY,   /* reading the request body */
    H1_APP,    /* the request is with a worker; no response header yet */
    H1_SEND,   /* writing the response */
    H1_FLUSH,  /* the last response is queued: close once it is written */
    H1_LINGER, /* our side is shut: dropping input until EOF or the timer */
    H1_DEAD,   /* closed; the reaper frees it */
};

/* A growable byte buffer for header pieces (http-parser hands them out in
 * fragments that point into the input, which we drain). */
struct h1buf {
    char *p;
    size_t len, cap;
};

struct h1conn {
    struct zf_conn conn; /* first: log lines take it */
    struct h1conn *prev, *next;
    struct zf_http_endpoint *ep; /* NULL after the module stopped */
    const char *scheme, *channel;
    char local_host[64];
    int local_port;
    struct bufferevent *bev;
    struct event *timer;  /* header, body, keep-alive and linger deadlines */
    struct event *reaper; /* frees the connection from the loop */
    enum h1_state state;
    unsigned long requests; /* responses completed on this connection */
    int read_closed;        /* the client shut its sending side */
    int busy, again;        /* process_input re-entrance guard */

    /* ---- the request being parsed ---- */
    http_parser parser;
    int in_msg;       /* the method of a request was seen */
    int msg_done;     /* the parser reached the end of the request */
    int headers_done; /* header section complete; header callbacks now mean trailers */
    int error_status; /* first error found (status to answer), 0 for none */
    char error_text[200];
    char method[H1_METHOD_MAX + 1];
    struct h1buf url, name, value;
    int hstate; /* 0: no field, 1: in a field name, 2: in a value */
    long nfields;
    uint64_t header_bytes;
    int host_seen;
    int expect_continue;
    int continue_sent;
    int http10;
    int req_keep_alive; /* what the request asks for (http_should_keep_alive) */
    uint64_t body_bytes;
    uint64_t body_expected; /* the Content-Length of the body being read, 0 for none/chunked */
    struct zf_spool spool;
    /* a Content-Length body going to a spool file on a plain socket is
     * read with splice(2) (socket -> pipe -> file), bypassing the
     * bufferevent, whose reading is disabled meanwhile */
    struct event *splice_ev;
    int pipefd[2];
    int piped; /* pipefd is open */
    uint64_t spliced;
    uint64_t msg_start_us;
    /* the framing scan: every byte the parser consumes that is not body data */
    const char *scan_pos;
    int scan_on;
    unsigned char fprev; /* previous framing byte; 0 after body data */
    size_t line_len;
    unsigned char fstate;        /* which framing line the scan is in (enum h1_frame) */
    unsigned char chunk_nonzero; /* the chunk-size being scanned is not all zeros */
    unsigned char body_chunked;  /* from on_headers_complete (trailers change p->flags) */
    unsigned char rl_done;       /* the request line was scanned */
    char rl_tail[9];             /* its last bytes so far: " HTTP/1.1" */

    /* ---- the exchange: being read, with the worker, or being sent ---- */
    struct zf_exchange *ex;
    const struct zf_upgrade *upgrade; /* a protocol switch the app is asked about */

    /* ---- the response being written ---- */
    int head_sent;
    int no_body, chunked, close_delimited, keep_alive;
    int64_t clen;
    uint64_t sent;
    int warned_excess;
    /* a file body being fed to the output a slice at a time, so that one
     * sendfile() never sends more than H1_FILE_SLICE (a huge file must not
     * hold the loop while other connections wait) */
    struct evbuffer_file_segment *file;
    ev_off_t file_pos; /* next byte, relative to the segment */
    size_t file_left;
    /* the response memory the output holds, counted against
     * server.max_buffered (exchange.h, struct zf_hold) */
    struct zf_hold *hold;
};

static inline uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- h1_parse.c: request parsing ---- */

/* Fills the parser callbacks (once, at the first connection). */
void zf__h1_init_settings(void);
/* Forgets the previous request: parser, buffers, flags. The exchange must
 * have been handed on or freed already. */
void zf__h1_reset_message(struct h1conn *c);
/* One parsing step over contiguous bytes: the start of a request or more of
 * the current one. Returns ZF_OK (consumed *used bytes, go on), ZF_AGAIN
 * (the request is complete: the parser is paused at its end) or ZF_ERROR
 * (c->error_status and c->error_text say what to answer). */
int zf__h1_parse_some(struct h1conn *c, const char *data, size_t len, size_t *used);
/* Records the first error found in a request: the status to answer and a
 * short text for the log and the response body. Returns -1, which is what a
 * parser callback returns to stop the parser. */
int zf__h1_fail(struct h1conn *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Frees a header-piece buffer's memory and empties it. */
void zf__h1_buf_free(struct h1buf *b);

/* ---- http1.c: what the parser needs back ---- */

/* The exchange operations of an HTTP/1.1 request (on_message_begin makes
 * the exchange with them). */
extern const struct zf_exchange_ops zf__h1_ops;
/* Lets go of the file body being sliced (the output keeps the slices it
 * already holds: the segment is reference counted). */
void zf__h1_drop_file(struct h1conn *c);

#endif
