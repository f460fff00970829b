/* The instances of this host (bus.dir): every bus.rescan_interval the
 * directory is read; each NAME.sock other than ours that someone listens
 * on gets our SUB connected to it, files that went away get it
 * disconnected, and a file nobody listens on (connect() says ECONNREFUSED)
 * two scans in a row, same inode, is a dead instance's: it is removed. Two
 * scans, because an instance between its bind() and listen() refuses too.
 *
 * A periodic rescan rather than inotify: it also notices an instance that
 * died without removing its file (no directory event then), and costs one
 * readdir plus one connect per peer each interval. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#include "../core/log.h"
#include "bus.h"

struct peer {
    char *path;
    char url[120]; /* ipc://PATH */
    ino_t ino;
    int refused;   /* consecutive scans that found nobody listening */
    int connected; /* our SUB is connected to it */
    int seen;      /* found by this scan */
    struct peer *next;
};

static struct peer *peers;

int zf__bus_probe(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return ZF_ERROR;
    strcpy(sa.sun_path, path);
    /* non-blocking: a full backlog answers EAGAIN at once, which means alive */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ZF_ERROR;
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    int err = errno;
    close(fd);
    if (rc == 0 || err == EAGAIN || err == EINPROGRESS)
        return ZF_OK;
    return err == ECONNREFUSED ? ZF_DECLINED : ZF_ERROR;
}

int zf__bus_port_plus(const char *url, int delta, char *out, size_t n)
{
    const char *colon = strrchr(url, ':');
    if (strncmp(url, "tcp://", 6) != 0 || !colon || colon < url + 7)
        return ZF_ERROR;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end || port < 1 || port + delta > 65535)
        return ZF_ERROR;
    int len = snprintf(out, n, "%.*s:%ld", (int)(colon - url), url, port + delta);
    return len > 0 && (size_t)len < n ? ZF_OK : ZF_ERROR;
}

static struct peer *find_peer(const char *path)
{
    for (struct peer *p = peers; p; p = p->next)
        if (strcmp(p->path, path) == 0)
            return p;
    return NULL;
}

static void drop_peer(struct peer *p, const char *why)
{
    if (p->connected) {
        zmq_disconnect(zf__bus_sub(), p->url);
        zf__bus_stat_peers(-1);
        zf_log(ZF_LOG_INFO, NULL, "bus: peer %s left (%s)", p->path, why);
        zf__bus_kick();
    }
    for (struct peer **pp = &peers; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    free(p->path);
    free(p);
}

/* One socket file found by the scan. */
static void check_file(const char *path, ino_t ino)
{
    struct peer *p = find_peer(path);
    if (!p) {
        p = zf_xcalloc(1, sizeof *p);
        p->path = zf_xstrdup(path);
        snprintf(p->url, sizeof p->url, "ipc://%.107s", path);
        p->next = peers;
        peers = p;
    }
    p->seen = 1;
    int rc = zf__bus_probe(path);
    if (rc == ZF_DECLINED) {
        if (p->refused && p->ino == ino) {
            /* same file, still nobody: its instance is dead. Unlink only
             * that inode (a restarted one may have just replaced it). */
            struct stat st;
            if (lstat(path, &st) == 0 && st.st_ino == ino && unlink(path) == 0) {
                zf__bus_stat_stale();
                zf_log(ZF_LOG_INFO, NULL,
                       "bus: removed %s: nobody listens on it (a dead "
                       "instance's)",
                       path);
            }
            drop_peer(p, "dead");
            return;
        }
        p->refused = 1;
        p->ino = ino;
        return;
    }
    p->refused = 0;
    p->ino = ino;
    if (rc == ZF_OK && !p->connected) {
        if (zmq_connect(zf__bus_sub(), p->url) != 0) {
            zf_log(ZF_LOG_WARN, NULL, "bus: cannot connect to %s: %s", p->url, zmq_strerror(errno));
            return;
        }
        p->connected = 1;
        zf__bus_stat_peers(1);
        zf_log(ZF_LOG_INFO, NULL, "bus: peer %s joined", path);
        zf__bus_kick();
    }
}

void zf__bus_rescan(void)
{
    const char *dir = zf_bus_cfg.dir;
    DIR *d = opendir(dir);
    if (!d) {
        zf_log(ZF_LOG_WARN, NULL, "bus: cannot read bus.dir %s: %s", dir, strerror(errno));
        return;
    }
    for (struct peer *p = peers; p; p = p->next)
        p->seen = 0;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".sock") != 0 || e->d_name[0] == '.')
            continue;
        int len = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (len < 0 || len > 107 || strcmp(path, zf__bus_own_path()) == 0)
            continue; /* too long for a unix socket: nobody can listen there */
        struct stat st;
        if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode))
            continue;
        check_file(path, st.st_ino);
    }
    closedir(d);
    struct peer *p = peers;
    while (p) {
        struct peer *next = p->next;
        if (!p->seen)
            drop_peer(p, "its socket file is gone");
        p = next;
    }
}

void zf__bus_peers_stop(void)
{
    while (peers) {
        struct peer *p = peers;
        peers = p->next;
        free(p->path);
        free(p);
    }
}
