/* loop.h - the one poll() loop: descriptors, deadlines, signals.
 *
 * Slots are fixed at start-up.  A callback gets the poll revents, or
 * LOOP_TIMEOUT when the slot's deadline passed.  Signals arrive through a
 * self-pipe, so handlers run in the loop, not in signal context.
 */
#ifndef PICOMAIL_LOOP_H
#define PICOMAIL_LOOP_H

#include <stdint.h>

#define LOOP_TIMEOUT 0x10000

typedef void (*loop_fn)(void *ctx, int revents);

/* Allocates nslots slots (start-up only).  0 or -1. */
int loop_init(unsigned nslots);

/* Watches fd (or, with fd -1, only a deadline).  Returns the slot, or -1
 * when every slot is taken. */
int loop_add(int fd, short events, loop_fn fn, void *ctx);

/* Changes the events a slot waits for. */
void loop_events(int slot, short events);

/* Sets the slot's absolute deadline in loop_now() milliseconds; 0: none. */
void loop_deadline(int slot, int64_t when);

/* Forgets the slot (does not close its descriptor). */
void loop_del(int slot);

/* Monotonic milliseconds, read once per round. */
int64_t loop_now(void);

/* Number of slots in use, and the total. */
unsigned loop_used(void);
unsigned loop_size(void);

/* Called after each round's events, before sleeping again (group commit). */
void loop_after_round(void (*fn)(void));

/* While pending() says work waits for the end of the round, the loop first
 * takes whatever else is ready at once (poll without waiting, a few times),
 * so that one group commit serves more sessions. */
void loop_gather(int (*pending)(void));

/* Delivers these signals to fn from inside the loop. 0 or -1. */
int loop_signals(const int *sigs, unsigned n, void (*fn)(int sig));

/* Runs until loop_stop(); 0, or -1 if poll() fails for good. */
int loop_run(void);
void loop_stop(void);

#endif
