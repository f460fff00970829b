/* Error log and access log: one write(2) per line, safe from any thread. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

int zf_log_level = ZF_LOG_INFO;

static int error_fd = 2;
static int access_fd = -1;
static char *error_path;
static char *access_path;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int zf_log_level_from_name(const char *name)
{
    for (size_t i = 0; i < ZF_ARRAY_LEN(level_names); i++)
        if (strcmp(name, level_names[i]) == 0)
            return (int)i;
    if (strcmp(name, "warning") == 0)
        return ZF_LOG_WARN;
    return -1;
}

static int is_stderr(const char *path)
{
    return !path || !*path || strcmp(path, "-") == 0 || strcmp(path, "stderr") == 0;
}

/* Opens path for appending; returns the fd or -1. */
static int open_log(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int zf_log_open(const char *path, const char *level)
{
    if (level) {
        int l = zf_log_level_from_name(level);
        if (l < 0) {
            fprintf(stderr, "zfront: unknown log level \"%s\" (error, warn, info, debug)\n",
                    level);
            return ZF_ERROR;
        }
        zf_log_level = l;
    }
    free(error_path);
    error_path = NULL;
    if (is_stderr(path)) {
        error_fd = 2;
        return ZF_OK;
    }
    int fd = open_log(path);
    if (fd < 0) {
        fprintf(stderr, "zfront: cannot open error log %s: %s\n", path, strerror(errno));
        return ZF_ERROR;
    }
    error_fd = fd;
    error_path = zf_xstrdup(path);
    return ZF_OK;
}

int zf_access_log_open(const char *path)
{
    free(access_path);
    access_path = NULL;
    if (access_fd > 2)
        close(access_fd);
    access_fd = -1;
    if (!path || !*path || strcmp(path, "off") == 0)
        return ZF_OK;
    if (strcmp(path, "-") == 0 || strcmp(path, "stderr") == 0) {
        access_fd = 2;
        return ZF_OK;
    }
    if (strcmp(path, "stdout") == 0) {
        access_fd = 1;
        return ZF_OK;
    }
    int fd = open_log(path);
    if (fd < 0) {
        zf_log(ZF_LOG_ERROR, NULL, "cannot open access log %s: %s", path, strerror(errno));
        return ZF_ERROR;
    }
    access_fd = fd;
    access_path = zf_xstrdup(path);
    return ZF_OK;
}

/* Re-opens a file log in place: dup2 keeps the fd number, so concurrent
 * writers never see a closed descriptor. */
static void reopen_one(int fd, const char *path)
{
    if (!path || fd <= 2)
        return;
    int nfd = open_log(path);
    if (nfd < 0) {
        zf_log(ZF_LOG_ERROR, NULL, "cannot re-open log %s: %s", path, strerror(errno));
        return;
    }
    dup2(nfd, fd);
    close(nfd);
}

void zf_log_reopen(void)
{
    reopen_one(error_fd, error_path);
    reopen_one(access_fd, access_path);
}

void zf_log_close(void)
{
    if (access_fd > 2)
        close(access_fd);
    if (error_fd > 2)
        close(error_fd);
    access_fd = -1;
    error_fd = 2;
    free(access_path);
    free(error_path);
    access_path = error_path = NULL;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* "2026/11/30 01:02:03 [info] " into buf; returns its length. */
static size_t stamp(char *buf, size_t cap, int level)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(buf, cap, "%Y/%m/%d %H:%M:%S", &tm);
    int k = snprintf(buf + n, cap - n, " [%s] ", level_names[level]);
    return n + (size_t)(k > 0 ? k : 0);
}

static size_t conn_prefix(char *buf, size_t cap, const struct zf_conn *c)
{
    if (!c)
        return 0;
    int k = snprintf(buf, cap, "#%llu %s %s: ", (unsigned long long)c->id,
                     c->proto ? c->proto : "conn", c->peer);
    return k > 0 && (size_t)k < cap ? (size_t)k : 0;
}

void zf__vlog(int level, const struct zf_conn *c, const char *fmt, va_list ap)
{
    char buf[4096];
    size_t n = stamp(buf, sizeof buf, level);
    n += conn_prefix(buf + n, sizeof buf - n, c);
    int k = vsnprintf(buf + n, sizeof buf - n, fmt, ap);
    if (k < 0)
        k = 0;
    n += (size_t)k;
    if (n > sizeof buf - 64)
        n = sizeof buf - 64;
    if (c && c->action) {
        k = snprintf(buf + n, sizeof buf - n, ", while %s", c->action);
        if (k > 0)
            n += (size_t)k;
        if (n > sizeof buf - 2)
            n = sizeof buf - 2;
    }
    buf[n++] = '\n';
    write_all(error_fd, buf, n);
}

void zf__log(int level, const struct zf_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    zf__vlog(level, c, fmt, ap);
    va_end(ap);
}

void zf_log_text(int level, const struct zf_conn *c, const char *text, size_t len)
{
    if (level > zf_log_level)
        return;
    /* One write for the whole block keeps a traceback together. */
    size_t cap = len + 256;
    char *buf = malloc(cap + 128 * 8);
    if (!buf)
        return;
    size_t n = stamp(buf, cap, level);
    n += conn_prefix(buf + n, cap - n, c);
    memcpy(buf + n, text, len);
    n += len;
    if (n == 0 || buf[n - 1] != '\n')
        buf[n++] = '\n';
    write_all(error_fd, buf, n);
    free(buf);
}

int zf_access_log_enabled(void)
{
    return access_fd >= 0;
}

/* Appends s with '"' and '\\' and control bytes escaped (nginx style);
 * spaces too when `space` is set (a field outside quotes). */
static size_t put_escaped_field(char *buf, size_t cap, const char *s, int space)
{
    size_t n = 0;
    if (!s || !*s) {
        if (cap > 1)
            buf[n++] = '-';
        return n;
    }
    for (; *s && n + 5 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\' || ch < 0x20 || ch >= 0x7f || (space && ch == ' '))
            n += (size_t)snprintf(buf + n, cap - n, "\\x%02X", ch);
        else
            buf[n++] = (char)ch;
    }
    return n;
}

static size_t put_escaped(char *buf, size_t cap, const char *s)
{
    return put_escaped_field(buf, cap, s, 0);
}

void zf_access_log(const struct zf_access_entry *e)
{
    if (access_fd < 0)
        return;
    char buf[8192];
    size_t n = 0;
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char when[64];
    strftime(when, sizeof when, "%d/%b/%Y:%H:%M:%S %z", &tm);
    const size_t cap = sizeof buf - 2;
    n += put_escaped(buf + n, cap - n, e->remote_addr);
    n += (size_t)snprintf(buf + n, cap - n, " - ");
    n += put_escaped_field(buf + n, cap - n, e->remote_user, 1); /* e.g. "Jane Doe" */
    n += (size_t)snprintf(buf + n, cap - n, " [%s] \"", when);
    n += put_escaped(buf + n, cap - n, e->method);
    if (n < cap)
        buf[n++] = ' ';
    n += put_escaped(buf + n, cap - n, e->target);
    if (n < cap)
        buf[n++] = ' ';
    n += put_escaped(buf + n, cap - n, e->protocol);
    if (n < cap - 40)
        n += (size_t)snprintf(buf + n, cap - n, "\" %d %llu \"", e->status,
                              (unsigned long long)e->bytes_sent);
    n += put_escaped(buf + n, cap - n, e->referer);
    if (n < cap - 3)
        n += (size_t)snprintf(buf + n, cap - n, "\" \"");
    n += put_escaped(buf + n, cap - n, e->user_agent);
    if (n < cap)
        buf[n++] = '"';
    buf[n++] = '\n';
    write_all(access_fd, buf, n);
}
