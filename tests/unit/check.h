/* check.h - the smallest test harness that does the job.
 *
 * CHECK(cond) counts a pass or prints "file:line: failed: cond" (with the
 * current table row, when check_row is set).  check_done prints the one
 * summary line "name: N passed, M failed" that tests/unit/unit.mk adds up,
 * and returns the exit status.
 */
#ifndef PICOMAIL_CHECK_H
#define PICOMAIL_CHECK_H

#include <stdio.h>
#include <string.h>

static unsigned check_passed, check_failed;
/* What the table-driven tests are looking at, for the failure message. */
static const char *check_row;

static inline int check_one(int ok, const char *expr, const char *file, int line)
{
	if (ok) {
		check_passed++;
		return 1;
	}
	check_failed++;
	if (check_row != NULL) {
		printf("%s:%d: failed: %s [row: %s]\n", file, line, expr, check_row);
	} else {
		printf("%s:%d: failed: %s\n", file, line, expr);
	}
	return 0;
}

static inline int check_str(const char *got, const char *want, const char *expr,
                            const char *file, int line)
{
	int ok = got != NULL && want != NULL && strcmp(got, want) == 0;

	if (!check_one(ok, expr, file, line)) {
		printf("\tgot:  '%s'\n\twant: '%s'\n", got != NULL ? got : "(null)",
		       want != NULL ? want : "(null)");
	}
	return ok;
}

static inline int check_long(long long got, long long want, const char *expr,
                             const char *file, int line)
{
	if (!check_one(got == want, expr, file, line)) {
		printf("\tgot:  %lld\n\twant: %lld\n", got, want);
		return 0;
	}
	return 1;
}

#define CHECK(cond) check_one((cond) != 0, #cond, __FILE__, __LINE__)
#define CHECK_STR(got, want) check_str((got), (want), #got " == " #want, __FILE__, __LINE__)
#define CHECK_INT(got, want) \
	check_long((long long)(got), (long long)(want), #got " == " #want, __FILE__, __LINE__)

static inline int check_done(const char *name)
{
	printf("%s: %u passed, %u failed\n", name, check_passed, check_failed);
	return check_failed == 0 ? 0 : 1;
}

#endif
