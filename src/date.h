/* date.h - dates as mail and the log write them: local time, English
 * names whatever the locale, and no strftime (musl's brings its locale
 * tables and formatter, 4-5 KB, for these three formats). */
#ifndef PICOMAIL_DATE_H
#define PICOMAIL_DATE_H

#include <stddef.h>
#include <time.h>

/* RFC 5322 3.3 date-time of t in local time with its offset, as the Date:
 * and Received: headers and DSNs carry it: "Sat, 6 Dec 2026 22:31:05 +0100". */
void date_rfc5322(char *out, size_t len, time_t t);

/* "Jan".."Dec" for a tm_mon of 0..11. */
const char *date_month(int mon);

#endif
