/* oauth_login.h - picomail oauth login [-C FILE]: the device
 * authorization grant (RFC 8628) for the smarthost's OAuth2 account,
 * from the device's console.
 *
 * Asks the device_endpoint of the smarthost_oauth file for a code, prints
 * where to enter it, polls the token_endpoint as RFC 8628 3.5 says (the
 * interval, 5 s more after each slow_down, until the code expires), and
 * writes the refresh token it gets into the file (atomically, 0600, the
 * owner kept).  Exit 0 once saved; 1 when the provider refuses (the user
 * said no, a wrong client); 75 when the code expired or the network
 * failed; 78 for settings missing. */
#ifndef PICOMAIL_OAUTH_LOGIN_H
#define PICOMAIL_OAUTH_LOGIN_H

/* argv[0] "oauth", argv[1] "login", then -C FILE. */
int oauth_login_main(int argc, char **argv);

#endif
