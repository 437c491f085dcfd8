/* stats.c - the daemon's counters (stats.h), in a file of their own so that
 * any module that counts links without the daemon. */
#include "stats.h"

struct stats stats;
