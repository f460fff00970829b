/* Small HTTP helpers shared by HTTP/1.1 and HTTP/2: token characters, the
 * Date header, reason phrases, hop-by-hop field names, freeing a
 * connection's bufferevent. */
#include <event2/bufferevent.h>
#ifdef ZF_WITH_HTTP2
#include <event2/bufferevent_ssl.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>
#endif
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http.h"

/* RFC 9110 section 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
 * "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA. */
int zf_http_is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Formats t as an IMF-fixdate. The names are spelled out here rather than
 * taken from strftime, whose %a/%b follow the process locale (the embedded
 * interpreter may change it). */
static void format_date(char *buf, size_t cap, time_t t)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, cap, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7], tm.tm_mday,
             months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Returns the current date as "Sun, 06 Nov 1994 08:49:37 GMT" from a buffer
 * reformatted at most once per second. Loop thread only (static buffer). */
const char *zf_http_date(void)
{
    static char cached[40];
    static time_t cached_at = (time_t)-1;
    time_t now = time(NULL);
    if (now != cached_at) {
        format_date(cached, sizeof cached, now);
        cached_at = now;
    }
    return cached;
}

struct reason {
    int status;
    const char *text;
};

static const struct reason reasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {102, "Processing"},
    {103, "Early Hints"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {205, "Reset Content"},
    {206, "Partial Content"},
    {207, "Multi-Status"},
    {208, "Already Reported"},
    {226, "IM Used"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {305, "Use Proxy"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {402, "Payment Required"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {407, "Proxy Authentication Required"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {421, "Misdirected Request"},
    {422, "Unprocessable Content"},
    {423, "Locked"},
    {424, "Failed Dependency"},
    {425, "Too Early"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {451, "Unavailable For Legal Reasons"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
    {506, "Variant Also Negotiates"},
    {507, "Insufficient Storage"},
    {508, "Loop Detected"},
    {510, "Not Extended"},
    {511, "Network Authentication Required"},
};

/* Returns the RFC 9110 reason phrase (static string), "" when unknown. */
const char *zf_http_reason(int status)
{
    size_t lo = 0, hi = ZF_ARRAY_LEN(reasons);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (reasons[mid].status == status)
            return reasons[mid].text;
        if (reasons[mid].status < status)
            lo = mid + 1;
        else
            hi = mid;
    }
    return "";
}

/* True for the connection-specific fields of RFC 9110 section 7.6.1 (and the
 * list wsgiref uses), which an application must not set: the server frames
 * the message itself. */
int zf_http_is_hop_by_hop(const char *name, size_t len)
{
    static const char *const names[] = {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
        "te",         "trailer",    "trailers",           "transfer-encoding",   "upgrade",
    };
    for (size_t i = 0; i < ZF_ARRAY_LEN(names); i++)
        if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0)
            return 1;
    return 0;
}

void zf__http_bev_free(struct bufferevent *bev)
{
    evutil_socket_t fd = -1;
#ifdef ZF_WITH_HTTP2
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (ssl) {
        /* the socket BIO (made without the close flag) is what the
         * bufferevent's finalizer closes: it gets no descriptor */
        BIO *bio = SSL_get_wbio(ssl);
        fd = bio && SSL_get_rbio(ssl) == bio ? (evutil_socket_t)BIO_get_fd(bio, NULL) : -1;
        if (fd >= 0 && fd == bufferevent_getfd(bev))
            BIO_set_fd(bio, -1, BIO_NOCLOSE);
        else
            fd = -1;
    } else
#endif
    {
        fd = bufferevent_getfd(bev);
        if (fd >= 0)
            bufferevent_setfd(bev, -1); /* its events go; it no longer owns fd */
    }
    bufferevent_free(bev); /* deletes its events now: fd is no longer polled */
    if (fd >= 0)
        evutil_closesocket(fd);
}
