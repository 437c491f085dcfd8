/* submitter.h - the local user at the other end of the submit socket.
 *
 * Every local user may hand mail to the daemon through <spool>/submit
 * (the sendmail command does).  The kernel says who they are
 * (SO_PEERCRED): their mail is theirs, so the envelope sender is their own
 * address, user@<qualify domain>, whatever they claim, unless they are
 * trusted (root, run_as, trusted_users), whose claim (sendmail -f) stands.
 * The same rule holds for what the command leaves in the maildrop while
 * the daemon is down, by the file's owner.
 */
#ifndef PICOMAIL_SUBMITTER_H
#define PICOMAIL_SUBMITTER_H

#include <stdint.h>
#include <sys/types.h>
#include "addr.h"
#include "conf.h"
#include "unixuser.h"

struct submitter {
	int known;                          /* the kernel told the uid */
	int trusted;
	uint32_t uid;
	char name[UNIXUSER_NAME_MAX];       /* login name, or "uid1000" */
	char address[ADDR_MAX + 1];         /* name@<qualify domain> */
};

/* Who uid is, under the configuration c. */
void submitter_by_uid(uid_t uid, const struct conf *c, struct submitter *out);

/* Who is at the other end of the unix socket fd (known 0 when the kernel
 * will not say: then untrusted, with no address). */
void submitter_of(int fd, const struct conf *c, struct submitter *out);

/* The envelope sender a submission from s gets for the sender it claims:
 * the claim from a trusted user, else s's own address.  1 when the claim
 * was replaced. */
int submitter_sender(const struct submitter *s, const char *claimed, char *out, size_t len);

#endif
