/* HTTP Range requests over a file response (RFC 9110 section 14). */
#ifndef ZF_RANGE_H
#define ZF_RANGE_H

#include <stdint.h>

#include "zfront.h"

/* Parses a Range header value against a representation of `size` bytes.
 * Only one byte range is served; multiple ranges are answered with the whole
 * representation (allowed by RFC 9110).
 * Returns ZF_OK with *start and *len set (206), ZF_DECLINED when the header is to
 * be ignored (malformed, not "bytes", several ranges: send 200), or
 * ZF_ERROR when no range is satisfiable (416). */
int zf_range_parse(const char *value, uint64_t size, uint64_t *start, uint64_t *len);

#endif
