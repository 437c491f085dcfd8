/* date.c - dates as mail and the log write them. */
#include "date.h"

#include <stdio.h>
#include <string.h>

static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

const char *date_month(int mon)
{
	return months[(unsigned)mon % 12];
}

void date_rfc5322(char *out, size_t len, time_t t)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	struct tm tm;
	long off;
	char sign = '+';

	if (localtime_r(&t, &tm) == NULL) {
		memset(&tm, 0, sizeof tm);
		tm.tm_mday = 1;
		tm.tm_year = 70;
		tm.tm_wday = 4;
	}
	off = tm.tm_gmtoff / 60;
	if (off < 0) {
		sign = '-';
		off = -off;
	}
	snprintf(out, len, "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld", days[(unsigned)tm.tm_wday % 7],
	         tm.tm_mday, date_month(tm.tm_mon), tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
	         tm.tm_sec, sign, off / 60, off % 60);
}
