/* imap_msg.h - a message file as IMAP sees it, read in a stream: its
 * octets on the wire, its lines, its MIME parts, its header fields.
 *
 * The wire form is msgwire.h's without the dot-stuffing: every line end
 * the file holds (LF, CRLF, CR CR LF, a bare CR) is one CRLF, and a last
 * line gets one.  Offsets are in that form (what RFC822.SIZE, BODY[]<n>
 * and a part's size count); the part table also keeps the file offset of
 * each part's first line, so a part can be read without the ones before.
 * Nothing allocates: buffers are the caller's or static (one message is
 * read at a time).
 */
#ifndef PICOMAIL_IMAP_MSG_H
#define PICOMAIL_IMAP_MSG_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define MIME_PARTS_MAX 128      /* parts of one message in the table */
#define MIME_DEPTH_MAX 16       /* multiparts and messages inside each other */
#define HDR_VALUE_MAX  8192     /* a header field's value, unfolded, as kept */

/* Reads the wire form from a file offset where a line starts. */
struct wreader {
	int fd;
	uint64_t pos;           /* file offset of the next octet to convert */
	uint64_t woff;          /* wire offset of the next octet out */
	int cr, bol, eof;
	size_t ilen, ipos;
	unsigned char in[4096];
};

void wr_init(struct wreader *r, int fd, uint64_t pos, uint64_t woff);

/* Up to cap (>= 3) wire octets into out; 0 at the end of the file or on
 * a read error (r->eof: 1 at the end, -1 on an error). */
size_t wr_read(struct wreader *r, unsigned char *out, size_t cap);

/* The next line without its CRLF: its first cap octets into line, *len
 * of them kept, *full its length.  1, or 0 at the end. */
int wr_line(struct wreader *r, char *line, size_t cap, size_t *len, uint64_t *full);

enum part_kind { PK_LEAF, PK_MULTI, PK_MESSAGE };

struct part {
	uint64_t hdr, body, end;    /* wire offsets: header, body, end of body */
	uint64_t fhdr, fbody;       /* file offsets of the header's and body's first lines */
	uint32_t lines;             /* lines of the body */
	uint16_t parent;            /* index, or 0xffff for the message */
	uint16_t first, next;       /* first child, next sibling (0: none) */
	uint8_t kind;
	uint8_t depth;
	uint8_t digest;             /* a multipart/digest: its parts default to message/rfc822 */
};

struct msgparts {
	unsigned n;
	int truncated;              /* deeper or more parts than the table holds */
	uint64_t size;              /* the whole message, wire octets */
	struct part p[MIME_PARTS_MAX];
};

/* Reads the whole message (fd at its start) into mp: part 0 is the
 * message.  0, or -1 on a read error. */
int msg_parts(int fd, struct msgparts *mp);

/* The part a section's numbers name ("1.2" as {1, 2}, n of them): its
 * index, with *as_message 1 when the numbers end on a message/rfc822
 * part's message (so HEADER and TEXT apply to it).  -1 if none. */
int msg_part_find(const struct msgparts *mp, const uint16_t *nums, unsigned n);

/* Header fields: fn is called with each field's name and unfolded value
 * (the first HDR_VALUE_MAX octets, leading white space dropped) of the
 * header at file offset fpos; returns 0, or -1 on a read error. */
typedef void (*field_fn)(void *ctx, const char *name, size_t nlen, const char *value,
                         size_t vlen);
int msg_fields(int fd, uint64_t fpos, field_fn fn, void *ctx);

/* A Date: value (RFC 5322 3.3) as days since 1970-01-01, or -1. */
long msg_date_days(const char *value, size_t len);

/* 1 if needle (nlen octets) is in hay, ASCII letters in either case. */
int msg_has(const char *hay, size_t hlen, const char *needle, size_t nlen);

#endif
