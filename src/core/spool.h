/* Spooling: a byte sink that stays in memory up to a threshold and moves to
 * an unlinked temporary file beyond it. Used for request bodies on the loop
 * thread and for generated response bodies on worker threads. */
#ifndef ZF_SPOOL_H
#define ZF_SPOOL_H

#include <stdint.h>
#include <sys/types.h>

#include "zfront.h"

/* A complete request body: in memory (fd < 0) or in an unlinked temp file
 * holding exactly `len` bytes from offset 0. The owner frees it with
 * zf_body_free. */
struct zf_body {
    char *mem;
    size_t len;
    int fd;
};

struct zf_spool {
    char *mem;
    size_t len; /* total bytes written */
    size_t cap;
    int fd;     /* -1 until spooled */
    size_t threshold;
    const char *dir; /* temp dir; kept by pointer */
};

/* Opens an unlinked temporary file in dir (O_TMPFILE, else mkstemp+unlink).
 * Returns the fd or -1 with errno set. */
int zf_tmpfile(const char *dir);

void zf_spool_init(struct zf_spool *s, size_t threshold, const char *dir);
/* Prepares for `size` bytes announced up front (a Content-Length): a body
 * that will not fit under the threshold goes to its file at once, a smaller
 * one gets its memory in one piece. Returns ZF_OK or ZF_ERROR (errno). */
int zf_spool_expect(struct zf_spool *s, uint64_t size);
/* Appends bytes. Returns ZF_OK or ZF_ERROR (errno set: ENOMEM, ENOSPC...). */
int zf_spool_write(struct zf_spool *s, const void *p, size_t n);
/* Moves the content into body (which takes ownership); s is reset. */
void zf_spool_take(struct zf_spool *s, struct zf_body *body);
void zf_spool_free(struct zf_spool *s);

/* Moves up to n bytes from the socket `sock` to the end of the spool's
 * file (the spool must be on disk: s->fd >= 0) through the pipe pfd with
 * splice(2): no byte is copied in user space. Loop thread (request bodies).
 * Returns the bytes moved (> 0), 0 at end of file, or -1 with errno set
 * (EAGAIN: nothing to read now; anything else: the pipe may still hold
 * bytes, close it). */
ssize_t zf_spool_splice(struct zf_spool *s, int sock, const int pfd[2], size_t n);

void zf_body_init(struct zf_body *b);
void zf_body_free(struct zf_body *b);
/* Writes all of buf to fd at offset, retrying short writes and EINTR.
 * Returns ZF_OK or ZF_ERROR. */
int zf_pwrite_all(int fd, const void *buf, size_t n, off_t off);

#endif
