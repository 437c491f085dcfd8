/* scanner.h - the content scanner hook: a program run on each message.
 *
 * The program of `scanner` (never a shell: its words are the argv) runs
 * in a child process with the message file on its standard input, its
 * standard output on /dev/null, in a process group of its own.  The
 * daemon does not wait for it: SIGCHLD, through the loop's self-pipe,
 * has scanner_reap collect the exit status and report it.
 */
#ifndef PICOMAIL_SCANNER_H
#define PICOMAIL_SCANNER_H

#include <sys/types.h>

/* status: the exit code (0 accept, 1 reject, else temporary), or -1 when
 * the program could not run or was killed by a signal. */
typedef void (*scanner_done_fn)(void *ctx, int status);

/* Start-up: room for n scanners at once.  0 or -1. */
int scanner_init(unsigned n);

/* Runs cmdline ("/path/prog arg...") on the file at path.  A handle >= 0,
 * or -1 with errno (no free slot: EAGAIN; the program could not run). */
int scanner_start(const char *cmdline, const char *path, scanner_done_fn done, void *ctx);

/* The same for any program: stdin from path (NULL: /dev/null), stdout
 * into out (-1: /dev/null), e.g. the write end of a pipe (the smarthost's
 * token command). */
int scanner_run(const char *cmdline, const char *path, int out, scanner_done_fn done, void *ctx);

/* Kills the scanner's process group and forgets it: done is never called.
 * The slot is free once the child has been reaped. */
void scanner_cancel(int handle);

/* Collects every child that ended and reports each (on SIGCHLD). */
void scanner_reap(void);

/* Scanners running, and the table's size (picomail status). */
unsigned scanner_running(void);
unsigned scanner_size(void);

#endif
