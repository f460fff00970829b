/* SIGUSR1: a state dump to the error log (docs/operations.md). */
#ifndef ZF_DUMP_H
#define ZF_DUMP_H

/* Loop thread: logs each worker's current request (method, target, channel,
 * how long) and the pool's queue at once, then every Python thread's stack
 * from a short-lived thread of its own (it takes the GIL, which the loop
 * never does). A dump asked for while one still runs is refused (logged). */
void zf_dump_state(void);
/* Shutdown, before Python is finalized and the logs are closed: waits (up to
 * timeout_ms) for a stack dump still running to end. Its thread takes the
 * GIL and writes to the error log; the acquire load of the flag it clears
 * last orders all of that before what shutdown does next. Returns ZF_OK, or
 * ZF_AGAIN when it still runs. */
int zf_dump_wait(unsigned timeout_ms);

#endif
