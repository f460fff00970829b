/* HTTP/1.1 request parsing: libhttp-parser's callbacks build the exchange
 * (method, target, header fields, body into the spool), and a framing scan
 * checks every byte the parser consumes as framing against RFC 9112,
 * because Debian's http-parser 2.9.4 is built non-strict and lets through
 * what a request smuggler needs (LIBRARY-NOTES.md; the fuzz target in
 * tests/fuzz/fuzz_http1.c holds it to a strict reference reader). The
 * connection side is http1.c; the shared state is in h1.h. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "h1.h"

static http_parser_settings settings;

static int buf_add(struct h1buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return ZF_ERROR;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return ZF_OK;
}

/* See h1.h. */
void zf__h1_buf_free(struct h1buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* See h1.h. */
int zf__h1_fail(struct h1conn *c, int status, const char *fmt, ...)
{
    if (c->error_status)
        return -1;
    c->error_status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error_text, sizeof c->error_text, fmt, ap);
    va_end(ap);
    return -1;
}

/* ------------------------------------------------------------ the framing scan */

/* Where the framing scan is: the request line and header section, then for
 * a chunked body each chunk-size line (digits, whitespace, extension), the
 * CRLF after each chunk's data, and the trailer section. */
enum h1_frame {
    FR_HEAD,      /* request line and field lines */
    FR_SIZE,      /* start of a chunk-size line: a HEXDIG must come */
    FR_DIGITS,    /* in the chunk-size */
    FR_SIZE_WS,   /* BWS after the chunk-size: only ';' or CRLF may follow */
    FR_EXT,       /* chunk extension: visible characters, SP and HTAB */
    FR_DATA_END,  /* right after chunk data: CRLF must come */
    FR_TRAILER,   /* trailer field lines */
    FR_BODY,      /* Content-Length body: no framing byte expected */
};

/* Checks the chunked framing byte ch (not CR or LF) in state c->fstate.
 * http-parser (non-strict) takes any byte >= 0x80 as the digit 0, ignores
 * whatever follows a space after the size and any two bytes after the chunk
 * data. Returns ZF_OK or ZF_ERROR (c->error_status set). */
static int scan_chunk_byte(struct h1conn *c, unsigned char ch)
{
    int hex = (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f');
    switch (c->fstate) {
    case FR_SIZE:
    case FR_DIGITS:
        if (hex) {
            c->fstate = FR_DIGITS;
            c->chunk_nonzero |= ch != '0';
            return ZF_OK;
        }
        if (c->fstate == FR_DIGITS && (ch == ' ' || ch == '\t' || ch == ';')) {
            c->fstate = ch == ';' ? FR_EXT : FR_SIZE_WS;
            return ZF_OK;
        }
        zf__h1_fail(c, 400, "invalid chunk-size (byte 0x%02x)", ch);
        return ZF_ERROR;
    case FR_SIZE_WS:
        if (ch == ' ' || ch == '\t' || ch == ';') {
            c->fstate = ch == ';' ? FR_EXT : FR_SIZE_WS;
            return ZF_OK;
        }
        zf__h1_fail(c, 400, "invalid chunk-size (byte 0x%02x after it)", ch);
        return ZF_ERROR;
    case FR_EXT:
        if (ch == '\t' || (ch >= 0x20 && ch != 0x7f))
            return ZF_OK;
        zf__h1_fail(c, 400, "control character 0x%02x in a chunk extension", ch);
        return ZF_ERROR;
    case FR_DATA_END:
        zf__h1_fail(c, 400, "chunk data not followed by CRLF");
        return ZF_ERROR;
    default:
        return ZF_OK;
    }
}

/* A line of the framing ended (its LF was scanned): checks the version at
 * the end of the request line, and moves from line to line in a chunked
 * body. Returns ZF_OK or ZF_ERROR. */
static int scan_line_end(struct h1conn *c)
{
    if (!c->rl_done) {
        /* the request line: http-parser (non-strict) lets "HTxx/1.1" through */
        if (memcmp(c->rl_tail, " HTTP/1.", 8) != 0 ||
            (c->rl_tail[8] != '0' && c->rl_tail[8] != '1')) {
            zf__h1_fail(c, 400, "invalid HTTP version in the request line");
            return ZF_ERROR;
        }
        c->rl_done = 1;
        return ZF_OK;
    }
    switch (c->fstate) {
    case FR_HEAD:
        if (c->line_len == 1) /* only the CR: the empty line ending the header section */
            c->fstate = c->body_chunked ? FR_SIZE : FR_BODY;
        break;
    case FR_SIZE_WS:
        zf__h1_fail(c, 400, "whitespace after the chunk-size without an extension");
        return ZF_ERROR;
    case FR_DIGITS:
    case FR_EXT:
        c->fstate = c->chunk_nonzero ? FR_DATA_END : FR_TRAILER;
        c->chunk_nonzero = 0;
        break;
    case FR_DATA_END:
        c->fstate = FR_SIZE;
        break;
    default:
        break;
    }
    return ZF_OK;
}

/* Checks bytes that the parser consumed as framing (request line, field
 * lines, chunk-size lines, trailers): every LF preceded by CR, every CR
 * followed by LF, the request line's version, the chunk-size lines and the
 * CRLF after chunk data, no line starting with whitespace (obs-fold), and no
 * unbounded line (chunk extensions). Debian's non-strict http-parser lets all of these
 * through. Returns ZF_OK or ZF_ERROR (c->error_status set). */
static int scan_framing(struct h1conn *c, const char *p, const char *end)
{
    for (; p < end; p++) {
        unsigned char ch = (unsigned char)*p;
        if (c->fprev == '\r' && ch != '\n') {
            zf__h1_fail(c, 400, "CR not followed by LF in the request framing");
            return ZF_ERROR;
        }
        if (ch == '\n') {
            if (c->fprev != '\r') {
                zf__h1_fail(c, 400, "bare LF line ending (lines must end with CRLF)");
                return ZF_ERROR;
            }
            if (scan_line_end(c) != ZF_OK)
                return ZF_ERROR;
            c->line_len = 0;
        } else if (ch == '\r' && c->fstate == FR_SIZE) {
            zf__h1_fail(c, 400, "empty chunk-size line");
            return ZF_ERROR;
        } else if (ch != '\r' && c->fstate != FR_HEAD && scan_chunk_byte(c, ch) != ZF_OK) {
            return ZF_ERROR;
        } else if (c->fprev == '\n' && (ch == ' ' || ch == '\t')) {
            zf__h1_fail(c, 400, "obsolete line folding (a header line starts with whitespace)");
            return ZF_ERROR;
        } else if (++c->line_len > zf_http_cfg.max_request_line + zf_http_cfg.max_header_size) {
            /* field lines and the request line meet tighter limits first:
             * this bounds chunk-size lines (extensions) */
            zf__h1_fail(c, 400, "line too long in the request framing");
            return ZF_ERROR;
        }
        if (!c->rl_done && ch != '\r') {
            memmove(c->rl_tail, c->rl_tail + 1, 8);
            c->rl_tail[8] = (char)ch;
        }
        c->fprev = ch;
    }
    return ZF_OK;
}

/* Scans the framing up to at (where the data of the callback running now
 * starts), so that a framing error is found before a later callback acts on
 * a request that will be refused anyway: which error is reported then does
 * not depend on how the bytes arrived. Returns 0 or -1 (stop the parser). */
static int scan_upto(struct h1conn *c, const char *at)
{
    if (!c->scan_on || at < c->scan_pos)
        return 0;
    if (scan_framing(c, c->scan_pos, at) != ZF_OK)
        return -1;
    c->scan_pos = at;
    return 0;
}

/* ------------------------------------------------------------ parser callbacks */


static int on_message_begin(http_parser *p)
{
    struct h1conn *c = p->data;
    c->ex = zf_exchange_new(&zf__h1_ops, c, &c->conn);
    if (!c->ex)
        return zf__h1_fail(c, 500, "out of memory");
    c->ex->scheme = c->scheme;
    c->ex->channel = c->channel;
    snprintf(c->ex->server_host, sizeof c->ex->server_host, "%s", c->local_host);
    c->ex->server_port = c->local_port;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct h1conn *c = p->data;
    if (scan_upto(c, at))
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)at[i];
        if (ch <= 0x20 || ch == 0x7f)
            return zf__h1_fail(c, 400, "invalid character 0x%02x in the request-target", ch);
    }
    if (c->url.len + len > zf_http_cfg.max_request_line)
        return zf__h1_fail(c, 414, "request-target longer than %llu bytes (http.max_request_line)",
                    (unsigned long long)zf_http_cfg.max_request_line);
    if (buf_add(&c->url, at, len) != ZF_OK)
        return zf__h1_fail(c, 500, "out of memory");
    return 0;
}

static int count_header_bytes(struct h1conn *c, size_t len)
{
    c->header_bytes += len;
    if (c->header_bytes > zf_http_cfg.max_header_size)
        return zf__h1_fail(c, 431, "header section larger than %llu bytes (http.max_header_size)",
                    (unsigned long long)zf_http_cfg.max_header_size);
    return 0;
}

static int name_is(const struct h1buf *b, const char *name)
{
    return b->len == strlen(name) && strcasecmp(b->p, name) == 0;
}

/* Ends the field whose name and value are in c->name and c->value: trims
 * optional whitespace from the value and adds the field to the request (a
 * trailer field is checked and dropped: WSGI has no trailers). */
static int end_field(struct h1conn *c)
{
    c->hstate = 0;
    const char *v = c->value.p ? c->value.p : "";
    size_t vlen = c->value.len;
    while (vlen && (*v == ' ' || *v == '\t'))
        v++, vlen--;
    while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
        vlen--;
    int rc = 0;
    /* http-parser does not check the first byte of a value */
    for (size_t i = 0; i < vlen && !rc; i++) {
        unsigned char ch = (unsigned char)v[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            rc = zf__h1_fail(c, 400, "control character 0x%02x in a header field value", ch);
    }
    if (!rc && !c->headers_done) {
        if (name_is(&c->name, "Host") && c->host_seen++)
            rc = zf__h1_fail(c, 400, "more than one Host header field");
        else if (name_is(&c->name, "Expect"))
            c->expect_continue = c->expect_continue >= 0 && vlen == 12 &&
                                         strncasecmp(v, "100-continue", 12) == 0
                                     ? 1
                                     : -1;
        if (!rc && zf_headers_add(&c->ex->req_headers, c->name.p, c->name.len, v, vlen) != ZF_OK)
            rc = zf__h1_fail(c, 500, "out of memory");
    }
    c->name.len = c->value.len = 0;
    return rc;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct h1conn *c = p->data;
    if (scan_upto(c, at))
        return -1;
    if (c->hstate == 2 && end_field(c))
        return -1;
    if (c->hstate == 0) {
        c->hstate = 1;
        if (++c->nfields > zf_http_cfg.max_headers)
            return zf__h1_fail(c, 431, "more than %ld header fields (http.max_headers)",
                        zf_http_cfg.max_headers);
        if (!c->headers_done)
            c->conn.action = "reading request headers";
    }
    for (size_t i = 0; i < len; i++)
        if (!zf_http_is_tchar((unsigned char)at[i]))
            return zf__h1_fail(c, 400, "invalid character 0x%02x in a header field name",
                        (unsigned char)at[i]);
    if (count_header_bytes(c, len))
        return -1;
    if (buf_add(&c->name, at, len) != ZF_OK)
        return zf__h1_fail(c, 500, "out of memory");
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct h1conn *c = p->data;
    if (scan_upto(c, at))
        return -1;
    c->hstate = 2;
    if (count_header_bytes(c, len))
        return -1;
    if (buf_add(&c->value, at, len) != ZF_OK)
        return zf__h1_fail(c, 500, "out of memory");
    return 0;
}

/* The header section is complete: check the version, set the target, and
 * decide about the body (limit, Expect). Errors stop the parser. */
static int on_headers_complete(http_parser *p)
{
    struct h1conn *c = p->data;
    if (c->hstate && end_field(c))
        return -1;
    c->headers_done = 1;
    c->body_chunked = (p->flags & F_CHUNKED) != 0;
    if (p->http_major != 1 || p->http_minor > 1)
        return zf__h1_fail(c, 400, "unsupported HTTP version %u.%u (only 1.0 and 1.1)", p->http_major,
                    p->http_minor);
    c->http10 = p->http_minor == 0;
    /* http-parser ends a CONNECT (and an Upgrade request without a body)
     * at its header section, skipping its own Transfer-Encoding check: the
     * bytes after it would be read as the next request. zfront opens no
     * tunnel, and switches protocols only before this parser (h2c). */
    if (p->method == HTTP_CONNECT)
        return zf__h1_fail(c, 501, "CONNECT is not supported");
    if (p->uses_transfer_encoding && !(p->flags & F_CHUNKED))
        return zf__h1_fail(c, 400, "Transfer-Encoding whose last coding is not chunked");
    if (!c->http10 && !c->host_seen)
        return zf__h1_fail(c, 400, "HTTP/1.1 request without a Host header field");
    c->req_keep_alive = http_should_keep_alive(p);
    if (c->http10 && p->uses_transfer_encoding)
        c->req_keep_alive = 0; /* RFC 9112 6.1: faulty framing, close after it */
    c->ex->protocol = c->http10 ? "HTTP/1.0" : "HTTP/1.1";
    if (zf_exchange_set_target(c->ex, c->method, strlen(c->method), c->url.p ? c->url.p : "",
                               c->url.len) != ZF_OK)
        return zf__h1_fail(c, 500, "out of memory");
    if (c->http10)
        c->expect_continue = 0; /* RFC 9110 10.1.1: ignored for HTTP/1.0 */
    if (c->expect_continue < 0)
        return zf__h1_fail(c, 417,
                    "unsupported expectation in the Expect header field "
                    "(only 100-continue is)");
    uint64_t max = zf_http_cfg.max_body_size;
    if (!(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX && max &&
        p->content_length > max)
        return zf__h1_fail(c, 413,
                    "request body of %llu bytes is larger than %llu bytes "
                    "(http.max_body_size)",
                    (unsigned long long)p->content_length, (unsigned long long)max);
    zf_spool_init(&c->spool, zf_cfg.input_spool, zf_cfg.tmp_dir);
    if (!(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX)
        c->body_expected = p->content_length;
    if (!(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX && p->content_length > 0 &&
        zf_spool_expect(&c->spool, p->content_length) != ZF_OK)
        return zf__h1_fail(c, 500, "cannot store the request body: %s", strerror(errno));
    if ((p->flags & F_CHUNKED) || (p->content_length != ULLONG_MAX && p->content_length > 0))
        c->conn.action = "reading request body";
    return 0;
}

static int check_body_size(struct h1conn *c, uint64_t n)
{
    uint64_t max = zf_http_cfg.max_body_size;
    if (max && n > max)
        return zf__h1_fail(c, 413, "chunked request body larger than %llu bytes (http.max_body_size)",
                    (unsigned long long)max);
    return 0;
}

static int on_chunk_header(http_parser *p)
{
    struct h1conn *c = p->data;
    /* p->content_length is the size of the chunk that follows: refuse it
     * before it arrives when it would pass the limit. */
    if (p->content_length != ULLONG_MAX && check_body_size(c, c->body_bytes + p->content_length))
        return -1;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct h1conn *c = p->data;
    if (c->scan_on) {
        if (scan_framing(c, c->scan_pos, at) != ZF_OK)
            return -1;
        c->scan_pos = at + len;
        c->fprev = 0;
    }
    c->body_bytes += len;
    if (check_body_size(c, c->body_bytes))
        return -1;
    if (zf_spool_write(&c->spool, at, len) != ZF_OK)
        return zf__h1_fail(c, 500, "cannot store the request body: %s", strerror(errno));
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct h1conn *c = p->data;
    if (c->hstate && end_field(c)) /* last trailer field */
        return -1;
    c->msg_done = 1;
    http_parser_pause(p, 1);
    return 0;
}

/* See h1.h. */
void zf__h1_init_settings(void)
{
    if (settings.on_message_complete)
        return;
    http_parser_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_headers_complete = on_headers_complete;
    settings.on_chunk_header = on_chunk_header;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
}

/* ------------------------------------------------------------ request parsing */

/* Forgets the previous request: parser, buffers, flags. The exchange must
 * have been handed on or freed already. */
void zf__h1_reset_message(struct h1conn *c)
{
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->in_msg = c->msg_done = c->headers_done = 0;
    c->error_status = 0;
    c->error_text[0] = 0;
    c->method[0] = 0;
    c->url.len = c->name.len = c->value.len = 0;
    c->hstate = 0;
    c->nfields = 0;
    c->header_bytes = 0;
    c->host_seen = c->expect_continue = c->continue_sent = 0;
    c->http10 = 0;
    c->req_keep_alive = 0;
    c->body_bytes = 0;
    c->body_expected = 0;
    c->spliced = 0;
    zf_spool_free(&c->spool);
    zf_spool_init(&c->spool, 0, NULL);
    c->fprev = 0;
    c->line_len = 0;
    c->fstate = FR_HEAD;
    c->chunk_nonzero = c->body_chunked = c->rl_done = 0;
    memset(c->rl_tail, 0, sizeof c->rl_tail);
    c->head_sent = c->no_body = c->chunked = c->close_delimited = c->keep_alive = 0;
    c->upgrade = NULL;
    c->clen = -1;
    c->sent = 0;
    c->warned_excess = 0;
    zf__h1_drop_file(c);
}

static int method_known(const char *m)
{
    for (int i = 0; i <= HTTP_SOURCE; i++)
        if (strcmp(http_method_str((enum http_method)i), m) == 0)
            return 1;
    return 0;
}

/* Starts a request at data (contiguous, len bytes): skips empty lines, reads
 * the method token and primes the parser with it. http-parser knows only a
 * fixed list of methods; any other token (the rest of WebDAV/DeltaV,
 * extension methods) is fed to it as "GET" and the real token kept for the
 * exchange, so every method reaches the application.
 * Returns ZF_OK (method consumed or left for the parser, *used set),
 * ZF_AGAIN (need more bytes; *used may cover empty lines), ZF_ERROR. */
static int begin_message(struct h1conn *c, const char *data, size_t len, size_t *used)
{
    size_t i = 0;
    *used = 0;
    while (i < len && (data[i] == '\r' || data[i] == '\n')) {
        if (data[i] == '\n') {
            zf__h1_fail(c, 400, "bare LF line ending before the request line");
            return ZF_ERROR;
        }
        if (i + 1 >= len) {
            *used = i;
            return ZF_AGAIN;
        }
        if (data[i + 1] != '\n') {
            zf__h1_fail(c, 400, "CR not followed by LF before the request line");
            return ZF_ERROR;
        }
        i += 2;
    }
    *used = i;
    size_t start = i;
    while (i < len && data[i] != ' ') {
        if (!zf_http_is_tchar((unsigned char)data[i])) {
            zf__h1_fail(c, 400, "invalid character 0x%02x in the request method", (unsigned char)data[i]);
            return ZF_ERROR;
        }
        if (i - start >= H1_METHOD_MAX) {
            zf__h1_fail(c, 400, "request method longer than %d characters", H1_METHOD_MAX);
            return ZF_ERROR;
        }
        i++;
    }
    if (i == len)
        return ZF_AGAIN;
    if (i == start) {
        zf__h1_fail(c, 400, "the request line starts with a space");
        return ZF_ERROR;
    }
    memcpy(c->method, data + start, i - start);
    c->method[i - start] = 0;
    c->in_msg = 1;
    c->msg_start_us = now_us();
    c->conn.action = "reading request line";
    c->fprev = 0;
    if (method_known(c->method))
        return ZF_OK; /* the parser reads it from the input */
    size_t n = http_parser_execute(&c->parser, &settings, "GET", 3);
    if (n != 3 || HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
        if (!c->error_status)
            zf__h1_fail(c, 500, "cannot start the request parser");
        return ZF_ERROR;
    }
    *used = i;
    return ZF_OK;
}

/* Maps a parser error to a status and text (unless a callback set one). */
static void parser_error(struct h1conn *c)
{
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (c->error_status)
        return;
    switch (e) {
    case HPE_HEADER_OVERFLOW:
        if (c->nfields == 0 && !c->headers_done)
            zf__h1_fail(c, 414, "request line too long (http.max_request_line)");
        else
            zf__h1_fail(c, 431, "header section too large (http.max_header_size)");
        break;
    case HPE_INVALID_VERSION:
        zf__h1_fail(c, 400, "invalid HTTP version");
        break;
    case HPE_INVALID_CONTENT_LENGTH:
    case HPE_INVALID_CHUNK_SIZE:
        /* in a chunked body http-parser reports a chunk-size that does not
         * fit in 64 bits as a bad content-length */
        if (c->headers_done && c->body_chunked)
            zf__h1_fail(c, 400, "chunk-size too large or invalid");
        else
            zf__h1_fail(c, 400, "malformed request: %s", http_errno_description(e));
        break;
    default:
        zf__h1_fail(c, 400, "malformed request: %s", http_errno_description(e));
        break;
    }
}

/* Feeds len bytes to the parser, then scans what it consumed as framing.
 * Returns ZF_OK (*used bytes consumed; c->msg_done tells whether the
 * request ended) or ZF_ERROR (c->error_status set). */
static int feed(struct h1conn *c, const char *data, size_t len, size_t *used)
{
    c->scan_pos = data;
    c->scan_on = 1;
    size_t n = http_parser_execute(&c->parser, &settings, data, len);
    c->scan_on = 0;
    *used = n;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e != HPE_OK && e != HPE_PAUSED) {
        parser_error(c);
        return ZF_ERROR;
    }
    if (scan_framing(c, c->scan_pos, data + n) != ZF_OK)
        return ZF_ERROR;
    if (c->error_status)
        return ZF_ERROR;
    if (!c->msg_done && n < len) {
        zf__h1_fail(c, 400, "malformed request");
        return ZF_ERROR;
    }
    return ZF_OK;
}

/* One parsing step over contiguous bytes: the start of a request or more of
 * the current one. Returns ZF_OK, ZF_AGAIN or ZF_ERROR as above. */
int zf__h1_parse_some(struct h1conn *c, const char *data, size_t len, size_t *used)
{
    if (!c->in_msg)
        return begin_message(c, data, len, used);
    return feed(c, data, len, used);
}
