#!/bin/bash
# run-demo.sh BINARY - "make run": a demo daemon on loopback, Maildir under ./run/.
set -eu
bin=$1
top=$(pwd)
run=$top/run
port=${PICOMAIL_DEMO_PORT:-2525}
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
maildir_root     $run/mail
spool            $run/spool
users            $run/users
aliases          $run/aliases
relay_from       127.0.0.0/8 ::1/128
max_connections  32
max_message_size 10M
CONF
cat <<MSG
picomail demo: SMTP on 127.0.0.1:$port, mail for demo@localhost lands in $run/mail/demo/new/
  send one:   swaks --server 127.0.0.1:$port --to demo@localhost
         or:  printf 'Subject: hi\n\nhello\n' | python3 -c 'import smtplib,sys; smtplib.SMTP("127.0.0.1",$port).sendmail("me@localhost",["demo@localhost"],sys.stdin.read())'
  status:     $bin status -C $run/picomail.conf
  stop:       Ctrl-C
MSG
exec "$bin" serve -C "$run/picomail.conf" -f
