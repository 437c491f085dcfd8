/* daemon.h - the running server: start-up, listeners, accepting into the
 * session pool, signals, reload, the control and submit sockets.  Nothing
 * the sessions need lives here: what is in force is inforce.h's, the
 * counters stats.h's, the pool sessions.h's. */
#ifndef PICOMAIL_DAEMON_H
#define PICOMAIL_DAEMON_H


/* Runs the daemon until SIGTERM; the exit status. */
int daemon_serve(const char *conf_path, int foreground);

#endif
