"""Messages whose structure IMAP clients read through FETCH: MIME trees of
every usual shape and a few broken ones, address lists of every RFC 5322
form, headers folded and encoded, files with LF, CRLF and bare CR line ends.
Each entry is (name, the file's bytes)."""


def lf(s):
    return s.replace(b"\r\n", b"\n")


SIMPLE = lf(b"""From: Alice Example <alice@example.org>
To: bob@example.net
Subject: plain text
Date: Tue, 1 Jul 2003 10:52:37 +0200
Message-ID: <simple@example.org>

Hello Bob,
a second line.
""")

ALTERNATIVE = lf(b"""From: "Doe, Jane" <jane@example.org>
To: Bob <bob@example.net>, carol@example.net
Cc: Team: dave@example.com, "Eve E." <eve@example.com>;
Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?= and more
Date: Wed, 2 Jul 2003 11:00:00 -0700
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b1=_x"
Message-ID: <alt@example.org>
In-Reply-To: <simple@example.org>

This is a preamble.
--b1=_x
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: quoted-printable

plain =C3=BC
second line
--b1=_x
Content-Type: text/html; charset=utf-8

<p>html</p>
--b1=_x--
epilogue
""")

MIXED = lf(b"""From: alice@example.org (Alice in a comment)
To: undisclosed-recipients:;
Subject: with an attachment
Content-Type: multipart/mixed;
 boundary=outer

--outer
Content-Type: multipart/related; boundary="rel"; type="text/html"

--rel
Content-Type: text/html; charset=us-ascii
Content-ID: <part1@example.org>
Content-Description: the page

<img src="cid:img1">
--rel
Content-Type: image/png; name="pic.png"
Content-Transfer-Encoding: base64
Content-ID: <img1>
Content-Disposition: inline; filename="pic.png"

iVBORw0KGgo=
--rel--

--outer
Content-Type: application/pdf; name="a report.pdf"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="a report.pdf"; size=4
Content-Language: en, de
Content-Location: http://example.org/r.pdf
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==

JVBERi0=
--outer--
""")

FORWARD = lf(b"""From: Bob <bob@example.net>
To: alice@example.org
Subject: Fwd: plain text
Reply-To: list@example.com
Sender: owner-list@example.com
Content-Type: multipart/mixed; boundary=fw

--fw
Content-Type: text/plain

See below.
--fw
Content-Type: message/rfc822

From: Alice Example <alice@example.org>
To: <@relay1,@relay2:bob@example.net>
Subject: inner
Content-Type: multipart/alternative; boundary=in

--in
Content-Type: text/plain

inner plain
--in
Content-Type: text/html

<b>inner</b>
--in--

--fw--
""")

DIGEST = lf(b"""From: digest@example.com
Subject: a digest
Content-Type: multipart/digest; boundary=dg

--dg

From: one@example.com
Subject: first

body one
--dg

From: two@example.com
Subject: second

body two
--dg--
""")

PARAMS = lf(b"""From: x@example.com
Subject: parameters
Content-Type: text/plain; (a comment) charset = "iso-8859-1" ; format=flowed;
\tname*=utf-8''na%C3%AFve.txt; delsp="yes"
Content-Disposition: attachment; filename*0="long"; filename*1="name.txt"

body
""")

NOHEADER_PART = lf(b"""From: x@example.com
Subject: parts without headers, preamble only
Content-Type: multipart/mixed; boundary="x"

--x

no header here
--x
Content-Type: text/plain

last, no closing boundary
""")

CRLF = (b"From: crlf@example.com\r\nSubject: stored with CRLF\r\n"
        b"Content-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\nContent-Type: text/plain\r\n\r\n"
        b"one\r\ntwo\r\n--c--\r\n")

BARE_CR = b"From: cr@example.com\nSubject: bare CR\n\nline one\rline two\r\nline three\n.dot\n"

NO_FINAL_NEWLINE = b"From: nl@example.com\nSubject: no newline at the end\n\nlast line"

EMPTY_BODY = b"From: empty@example.com\nSubject: empty\n\n"

HEADER_ONLY = b"From: hdr@example.com\nSubject: no blank line"

ADDRESSES = lf(b"""From: =?iso-8859-1?q?J=F6rg?= <joerg@example.de>
To: "Smith, John \\"JJ\\"" <john@example.com>, plainname, <@a,@b:route@example.com>,
 group: one@example.com, two@example.com;, last@example.com
Cc: a@example.com (comment (nested)), "quoted local"@example.com
Bcc:
Subject: addresses
Message-ID:
 <folded@example.org>
In-Reply-To: <a@x> <b@y>

x
""")

ENCODED_RFC822 = lf(b"""From: x@example.com
Subject: encoded message part
Content-Type: multipart/mixed; boundary=e

--e
Content-Type: message/rfc822
Content-Transfer-Encoding: base64

RnJvbTogeEB5Cgp4Cg==
--e--
""")

DASHES = lf(b"""From: x@example.com
Subject: lines that look like boundaries
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: text/plain

--bb not a boundary
--b- nor this
-- b not either
--b  
Content-Type: text/plain

after a boundary with white space
--b--  
""")

CORPUS = [
    ("simple", SIMPLE), ("alternative", ALTERNATIVE), ("mixed", MIXED), ("forward", FORWARD),
    ("digest", DIGEST), ("params", PARAMS), ("noheader_part", NOHEADER_PART), ("crlf", CRLF),
    ("bare_cr", BARE_CR), ("no_final_newline", NO_FINAL_NEWLINE), ("empty_body", EMPTY_BODY),
    ("header_only", HEADER_ONLY), ("addresses", ADDRESSES), ("encoded_rfc822", ENCODED_RFC822),
    ("dashes", DASHES),
]


def deep(levels):
    """A message nested levels deep in multiparts."""
    head = b"From: deep@example.com\nSubject: deep\nContent-Type: multipart/mixed; boundary=L0\n\n"
    body = b""
    for i in range(levels):
        body += b"--L%d\nContent-Type: multipart/mixed; boundary=L%d\n\n" % (i, i + 1)
    body += b"--L%d\nContent-Type: text/plain\n\ncore\n" % levels
    for i in range(levels, -1, -1):
        body += b"--L%d--\n" % i
    return head + body
