/* wss:// sessions: the BIO through which a session's SSL reads and writes
 * its socket once the session took it out of the OpenSSL bufferevent
 * (session.c, raw_take). Loop thread only. */
#include "ws.h"

#ifdef ZF_WITH_HTTP2
#include <errno.h>
#include <openssl/bio.h>
#include <stdint.h>
#include <sys/socket.h>

/* A send or recv that returned -1 only because it would block. */
static int retriable(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* The session's SSL reads and writes the socket through this BIO: send and
 * recv, nothing else. It does not tell its fd (BIO_get_fd gives -1), on
 * purpose: the OpenSSL bufferevent the SSL came from is destroyed later in
 * the loop pass (libevent finalizes it), and its destructor closes the fd of
 * the SSL's BIO. The session closes the socket itself. */
static int bio_write(BIO *b, const char *buf, int len)
{
    BIO_clear_retry_flags(b);
    ssize_t n = send((int)(intptr_t)BIO_get_data(b), buf, (size_t)len, MSG_NOSIGNAL);
    if (n < 0 && retriable())
        BIO_set_retry_write(b);
    return (int)n;
}

static int bio_read(BIO *b, char *buf, int len)
{
    BIO_clear_retry_flags(b);
    ssize_t n = recv((int)(intptr_t)BIO_get_data(b), buf, (size_t)len, 0);
    if (n < 0 && retriable())
        BIO_set_retry_read(b);
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : cmd == BIO_C_GET_FD ? -1 : 0;
}

void *zf__ws_bio_new(evutil_socket_t fd)
{
    static BIO_METHOD *method;
    if (!method) {
        BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "zfront ws");
        if (!m || !BIO_meth_set_write(m, bio_write) || !BIO_meth_set_read(m, bio_read) ||
            !BIO_meth_set_ctrl(m, bio_ctrl)) {
            BIO_meth_free(m);
            return NULL;
        }
        method = m; /* one for the process */
    }
    BIO *b = BIO_new(method);
    if (b) {
        BIO_set_data(b, (void *)(intptr_t)fd);
        BIO_set_init(b, 1);
    }
    return b;
}
#endif
