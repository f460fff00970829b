/* Error log and access log.
 *
 * Every line about a connection carries its id, its peer and what it was
 * doing ("while reading request headers"), the way nginx does. Debug lines
 * cost one integer comparison when debug logging is off. Both logs may be
 * written from any thread: each line is formatted into a local buffer and
 * written with one write(2). */
#ifndef ZF_LOG_H
#define ZF_LOG_H

#include <stdarg.h>

#include "zfront.h"

enum zf_log_level {
    ZF_LOG_ERROR = 0,
    ZF_LOG_WARN = 1,
    ZF_LOG_INFO = 2,
    ZF_LOG_DEBUG = 3,
};

/* The part of every connection that logging needs. Protocol connection
 * structs embed it as their first member. `action` is a static string that
 * names the current phase, e.g. "reading request headers". */
struct zf_conn {
    uint64_t id;
    const char *action;
    char peer[64];      /* "addr:port" of the client, for log lines */
    char peer_addr[48]; /* numeric address only */
    int peer_port;
    const char *proto;  /* "http", "ssh", ... (static string) */
};

extern int zf_log_level;

/* Opens the error log: path NULL or "-" or "stderr" means stderr. Level is
 * one of "error", "warn", "info", "debug". Returns ZF_OK or ZF_ERROR. */
int zf_log_open(const char *path, const char *level);
/* Opens the access log (combined format): NULL/"" disables it, "-" is
 * stderr. Returns ZF_OK or ZF_ERROR. */
int zf_access_log_open(const char *path);
/* Re-opens both logs at their paths (SIGHUP / logrotate). */
void zf_log_reopen(void);
void zf_log_close(void);

int zf_log_level_from_name(const char *name);

/* Writes one error-log line when level <= zf_log_level. conn may be NULL. */
#define zf_log(level, conn, ...)                                                                   \
    do {                                                                                           \
        if ((level) <= zf_log_level)                                                               \
            zf__log((level), (conn), __VA_ARGS__);                                                 \
    } while (0)

void zf__log(int level, const struct zf_conn *conn, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void zf__vlog(int level, const struct zf_conn *conn, const char *fmt, va_list ap);
/* Writes raw text (e.g. a Python traceback) to the error log, each line
 * prefixed with the time and level. */
void zf_log_text(int level, const struct zf_conn *conn, const char *text, size_t len);

/* One access-log line in combined format. Any string may be NULL ("-"). */
struct zf_access_entry {
    const char *remote_addr;
    const char *method;
    const char *target;
    const char *protocol;
    int status;
    uint64_t bytes_sent; /* body bytes */
    const char *referer;
    const char *user_agent;
    const char *remote_user;
    uint64_t duration_us;
};
void zf_access_log(const struct zf_access_entry *e);
int zf_access_log_enabled(void);

#endif
