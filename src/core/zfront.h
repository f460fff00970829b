/* zfront: common definitions shared by every subsystem.
 *
 * Return codes follow one small fixed set (see CONVENTIONS.md): a call that
 * fails never fires its callback. */
#ifndef ZF_ZFRONT_H
#define ZF_ZFRONT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ZF_OK 0
#define ZF_ERROR (-1)
#define ZF_AGAIN (-2)
#define ZF_DECLINED (-5)

#define ZF_VERSION "0.1.0"
#define ZF_SERVER_NAME "zfront"

#define ZF_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

struct zf_server;
struct zf_conn;
struct zf_exchange;
struct zf_worker;

/* Allocation that aborts with a message on failure. Use only at start-up or
 * where a failure could not be confined to one connection. */
void *zf_xmalloc(size_t n);
void *zf_xcalloc(size_t n, size_t m);
char *zf_xstrdup(const char *s);

/* Monotonic clock in milliseconds. */
uint64_t zf_now_ms(void);

#endif
