#!/bin/bash
# run-demo.sh BINARY - "make run": a demo daemon on loopback, mail in by
# SMTP and out by POP3, Maildir under ./run/.  Ports above 1024, so that it
# runs as any user; PICOMAIL_DEMO_PORT and PICOMAIL_DEMO_POP3_PORT move them.
set -eu
bin=$1
top=$(pwd)
run=$top/run
port=${PICOMAIL_DEMO_PORT:-2525}
pop3=${PICOMAIL_DEMO_POP3_PORT:-1100}
mkdir -p "$run"
if [ ! -f "$run/users" ]; then
    # The demo user "demo" has the password "demo".
    printf 'demo\n' | "$bin" passwd | sed 's/^/demo:/' > "$run/users"
    chmod 600 "$run/users"
fi
[ -f "$run/aliases" ] || printf 'postmaster: demo\nroot: demo\n' > "$run/aliases"
cat > "$run/picomail.conf" <<CONF
# Written by "make run": a demo on loopback only.
hostname         demo.localhost
domains          localhost demo.localhost
listen           smtp 127.0.0.1:$port
listen           pop3 127.0.0.1:$pop3
# The password crosses loopback only: no TLS key needed for the demo.
plaintext_auth   yes
maildir_root     $run/mail
spool            $run/spool
users            $run/users
aliases          $run/aliases
relay_from       127.0.0.0/8 ::1/128
max_connections  32
max_message_size 10M
CONF
cat <<MSG
picomail demo: mail in by SMTP on 127.0.0.1:$port, out by POP3 on 127.0.0.1:$pop3
  user demo, password demo: mail for demo@localhost lands in $run/mail/demo/new/ (cur/ once fetched)
  send one:   swaks --server 127.0.0.1:$port --to demo@localhost
         or:  printf 'Subject: hi\n\nhello\n' | python3 -c 'import smtplib,sys; smtplib.SMTP("127.0.0.1",$port).sendmail("me@localhost",["demo@localhost"],sys.stdin.read())'
  fetch one:  curl -s -u demo:demo pop3://127.0.0.1:$pop3/1
   list all:  curl -s -u demo:demo pop3://127.0.0.1:$pop3/
  fetch all:  python3 -c 'import poplib; p=poplib.POP3("127.0.0.1",$pop3); p.user("demo"); p.pass_("demo"); [print(b"\n".join(p.retr(i)[1]).decode(errors="replace")) for i in range(1,p.stat()[0]+1)]; p.quit()'
  status:     $bin status -C $run/picomail.conf
  stop:       Ctrl-C
MSG
exec "$bin" serve -C "$run/picomail.conf" -f
