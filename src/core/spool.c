/* Spooling to unlinked temporary files. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spool.h"

int zf_tmpfile(const char *dir)
{
    if (!dir || !*dir)
        dir = "/tmp";
#ifdef O_TMPFILE
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
        return -1;
#endif
    char path[4096];
    if (snprintf(path, sizeof path, "%s/zfront-spool-XXXXXX", dir) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int tfd = mkostemp(path, O_CLOEXEC);
    if (tfd < 0)
        return -1;
    unlink(path);
    return tfd;
}

int zf_pwrite_all(int fd, const void *buf, size_t n, off_t off)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return ZF_ERROR;
        }
        if (w == 0) {
            errno = ENOSPC;
            return ZF_ERROR;
        }
        p += w;
        off += w;
        n -= (size_t)w;
    }
    return ZF_OK;
}

void zf_spool_init(struct zf_spool *s, size_t threshold, const char *dir)
{
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->threshold = threshold;
    s->dir = dir;
}

/* Moves what is in memory to a new temp file. Returns ZF_OK or ZF_ERROR. */
static int spill(struct zf_spool *s)
{
    s->fd = zf_tmpfile(s->dir);
    if (s->fd < 0)
        return ZF_ERROR;
    if (s->len && zf_pwrite_all(s->fd, s->mem, s->len, 0) != ZF_OK)
        return ZF_ERROR;
    free(s->mem);
    s->mem = NULL;
    s->cap = 0;
    return ZF_OK;
}

int zf_spool_expect(struct zf_spool *s, uint64_t size)
{
    if (s->fd >= 0 || size <= s->len)
        return ZF_OK;
    if (size > s->threshold)
        return spill(s);
    if (size > s->cap) {
        char *m = realloc(s->mem, (size_t)size);
        if (!m) {
            errno = ENOMEM;
            return ZF_ERROR;
        }
        s->mem = m;
        s->cap = (size_t)size;
    }
    return ZF_OK;
}

int zf_spool_write(struct zf_spool *s, const void *p, size_t n)
{
    if (n == 0)
        return ZF_OK;
    if (s->fd < 0 && s->len + n > s->threshold && spill(s) != ZF_OK)
        return ZF_ERROR;
    if (s->fd >= 0) {
        if (zf_pwrite_all(s->fd, p, n, (off_t)s->len) != ZF_OK)
            return ZF_ERROR;
        s->len += n;
        return ZF_OK;
    }
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n)
            cap *= 2;
        if (cap > s->threshold && s->threshold >= s->len + n)
            cap = s->threshold;
        char *m = realloc(s->mem, cap);
        if (!m) {
            errno = ENOMEM;
            return ZF_ERROR;
        }
        s->mem = m;
        s->cap = cap;
    }
    memcpy(s->mem + s->len, p, n);
    s->len += n;
    return ZF_OK;
}

void zf_spool_take(struct zf_spool *s, struct zf_body *body)
{
    zf_body_free(body);
    body->mem = s->mem;
    body->len = s->len;
    body->fd = s->fd;
    s->mem = NULL;
    s->fd = -1;
    s->len = s->cap = 0;
}

void zf_spool_free(struct zf_spool *s)
{
    free(s->mem);
    if (s->fd >= 0)
        close(s->fd);
    s->mem = NULL;
    s->fd = -1;
    s->len = s->cap = 0;
}

void zf_body_init(struct zf_body *b)
{
    b->mem = NULL;
    b->len = 0;
    b->fd = -1;
}

void zf_body_free(struct zf_body *b)
{
    free(b->mem);
    if (b->fd >= 0)
        close(b->fd);
    zf_body_init(b);
}

ssize_t zf_spool_splice(struct zf_spool *s, int sock, const int pfd[2], size_t n)
{
    if (s->fd < 0) {
        errno = EINVAL;
        return -1;
    }
    ssize_t in;
    do
        in = splice(sock, NULL, pfd[1], NULL, n, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    while (in < 0 && errno == EINTR);
    if (in <= 0)
        return in;
    loff_t off = (loff_t)s->len;
    size_t left = (size_t)in;
    while (left > 0) {
        ssize_t out = splice(pfd[0], NULL, s->fd, &off, left, SPLICE_F_MOVE);
        if (out < 0 && errno == EINTR)
            continue;
        if (out <= 0) {
            if (out == 0)
                errno = ENOSPC;
            if (errno == EAGAIN)
                errno = EIO; /* not "try later": the bytes are in the pipe */
            return -1;
        }
        left -= (size_t)out;
    }
    s->len += (size_t)in;
    return in;
}
