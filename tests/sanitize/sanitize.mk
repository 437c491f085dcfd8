# tests/sanitize/sanitize.mk - the daemon under ASan+UBSan and under valgrind,
# as a fragment of the top Makefile.
#
#   make test-asan       build/asan/picomail{,-test}: glibc, dynamic, the same
#                        sources built by clang with -fsanitize=address,undefined;
#                        then the whole integration suite against them.  Any
#                        sanitizer report (a file under build/asan/reports/)
#                        fails it.
#   make test-valgrind   build/valgrind/picomail{,-test}: glibc, dynamic, -g;
#                        the event-loop part of the suite (SAN_VG_TESTS) with
#                        every daemon started under valgrind (memcheck, full
#                        leak check).  Any error or definite leak fails it.
#   make -f tests/sanitize/sanitize.mk test-asan   (standalone)
#
# Run from the top of the repository.  clang for the sanitizers: its runtime
# is one library, so UBSan's reports go to log_path like ASan's (with gcc,
# libubsan beside libasan writes them to stderr whatever UBSAN_OPTIONS say).
# BearSSL comes from board/common/bearssl.sh: both builds link the unit
# tests' host copy (tests/unit/unit.mk: $(UNIT_CC), build/unit/bearssl),
# uninstrumented as BearSSL would be in a clang build of its own.
# The test builds count allocations for "picomail status" (src/testalloc.c):
# the musl one wraps malloc with -Wl,--wrap; the ASan one counts through the
# sanitizer's allocation hook instead, which also sees the allocations libc
# makes for itself (a --wrap in a dynamic link sees only our own calls); the
# valgrind one keeps the --wrap, as valgrind replaces the malloc it resolves to.
# Only SAN_ names are defined here.

ifndef UNIT_BEARSSL_LIB
include tests/unit/unit.mk
endif

SAN_DEFAULT_GOAL := $(.DEFAULT_GOAL)

SAN_CC       = clang
SAN_PYTHON   = $(if $(PYTHON),$(PYTHON),/usr/bin/python3)
SAN_SRCS     = $(filter-out src/testalloc.c,$(wildcard src/*.c))
SAN_HDRS     = $(wildcard src/*.h)
SAN_WARN     = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror
SAN_FLAGS    = -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
SAN_OUT      = build/asan
SAN_BEARSSL  = $(UNIT_BEARSSL)
SAN_BEARSSL_LIB = $(UNIT_BEARSSL_LIB)
SAN_OBJS     = $(SAN_SRCS:src/%.c=$(SAN_OUT)/obj/%.o)
SAN_TEST_OBJS = $(SAN_SRCS:src/%.c=$(SAN_OUT)/obj-test/%.o) $(SAN_OUT)/obj-test/testalloc.o
SAN_REPORTS  = $(SAN_OUT)/reports
# Every sanitized process, the daemon and each command the tests run, writes
# a report to reports/san.<pid> and stops at the first one.  Leaks are
# checked when a process exits (a daemon stopped by SIGTERM, a command).
# One log_path for both: clang's runtime is one, and takes whichever it
# reads last.
SAN_ASAN_OPTIONS  = log_path=$(CURDIR)/$(SAN_REPORTS)/san:abort_on_error=1:halt_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1
SAN_UBSAN_OPTIONS = log_path=$(CURDIR)/$(SAN_REPORTS)/san:halt_on_error=1:abort_on_error=1:print_stacktrace=1

SAN_VG_OUT   = build/valgrind
SAN_VG_FLAGS = -g -O1
SAN_VG_OBJS  = $(SAN_SRCS:src/%.c=$(SAN_VG_OUT)/obj/%.o)
SAN_VG_TEST_OBJS = $(SAN_SRCS:src/%.c=$(SAN_VG_OUT)/obj-test/%.o) $(SAN_VG_OUT)/obj-test/testalloc.o
SAN_VG_REPORTS = $(SAN_VG_OUT)/reports
# -q: the log holds only errors, so an empty log is a clean run (a daemon
# killed by SIGKILL leaves no summary, but the errors it had are there).
SAN_VG_WRAP  = valgrind -q --tool=memcheck --error-exitcode=97 --leak-check=full \
               --show-leak-kinds=definite --errors-for-leak-kinds=definite \
               --track-fds=no --log-file=$(CURDIR)/$(SAN_VG_REPORTS)/vg.%p.log
# The event-loop paths, chosen to keep the run near a minute: SMTP delivery
# and pipelining, POP3 (streamed RETR, DELE/QUIT, restart), the TLS
# handshakes as server (STARTTLS, STLS, implicit, garbage, pool full) and as
# client (smarthost STARTTLS and implicit TLS, AUTH), relaying through the
# queue (retries, DSN, two domains in one run), OAuth2 at the smarthost (a
# token program, the refresh grant over HTTPS, a hostile token endpoint),
# IMAP (FETCH, STORE and EXPUNGE, APPEND, COPY and MOVE, two sessions, IDLE,
# STARTTLS, SEARCH's limits).  SAN_VG_TESTS=<files> on the
# command line runs others, e.g. the whole of test_smtp.py test_pop3.py
# test_tls.py test_relay.py (about 200 s).
SAN_VG_T     = tests/integration
SAN_VG_TESTS = $(SAN_VG_T)/test_smtp.py::test_smtplib_delivery \
               $(SAN_VG_T)/test_smtp.py::test_swaks_delivery \
               $(SAN_VG_T)/test_smtp.py::test_several_recipients_written_once_and_hard_linked \
               $(SAN_VG_T)/test_smtp.py::test_dot_unstuffing \
               $(SAN_VG_T)/test_smtp.py::test_message_over_max_size_refused_after_the_dot \
               $(SAN_VG_T)/test_smtp.py::test_pipelining_command_group \
               $(SAN_VG_T)/test_smtp.py::test_pipelining_two_transactions_in_one_write \
               $(SAN_VG_T)/test_smtp.py::test_end_of_data_split_across_reads \
               $(SAN_VG_T)/test_smtp.py::test_concurrent_sessions_all_delivered \
               $(SAN_VG_T)/test_pop3.py::test_poplib_every_command \
               $(SAN_VG_T)/test_pop3.py::test_retr_crlf_and_dot_stuffing_on_the_wire \
               $(SAN_VG_T)/test_pop3.py::test_uidl_stable_across_sessions_and_restart \
               $(SAN_VG_T)/test_pop3.py::test_dele_marks_rset_unmarks_quit_removes \
               $(SAN_VG_T)/test_pop3.py::test_pipelined_big_retrs_come_out_whole_and_in_order \
               $(SAN_VG_T)/test_pop3.py::test_shutdown_with_an_open_session_deletes_nothing \
               $(SAN_VG_T)/test_tls.py::test_starttls_raw_session \
               $(SAN_VG_T)/test_tls.py::test_smtp_ssl_implicit_tls \
               $(SAN_VG_T)/test_tls.py::test_poplib_stls_and_pop3_ssl \
               $(SAN_VG_T)/test_tls.py::test_pipelined_transactions_over_tls \
               $(SAN_VG_T)/test_tls.py::test_large_messages_retrieved_over_tls \
               $(SAN_VG_T)/test_tls.py::test_plaintext_pipelined_after_starttls_is_discarded \
               $(SAN_VG_T)/test_tls.py::test_garbage_instead_of_client_hello \
               $(SAN_VG_T)/test_tls.py::test_tls_pool_exhausted \
               $(SAN_VG_T)/test_relay.py::test_relayed_exactly_once_with_trace_and_body \
               $(SAN_VG_T)/test_relay.py::test_4xx_then_250 \
               $(SAN_VG_T)/test_relay.py::test_one_of_three_refused_one_dsn \
               $(SAN_VG_T)/test_relay_mx.py::test_two_domains_two_transactions \
               $(SAN_VG_T)/test_relay_tls.py::test_starttls_required_and_verified \
               $(SAN_VG_T)/test_relay_tls.py::test_smarthost_auth_implicit_tls \
               $(SAN_VG_T)/test_oauth_command.py::test_refused_token_is_replaced_within_the_attempt \
               $(SAN_VG_T)/test_oauth_refresh.py::test_refresh_grant_delivers \
               $(SAN_VG_T)/test_oauth_refresh.py::test_hostile_endpoint_defers_and_the_daemon_serves_on[bad-chunk] \
               $(SAN_VG_T)/test_imap.py::test_imaplib_session \
               $(SAN_VG_T)/test_imap.py::test_fetch_items_byte_for_byte \
               $(SAN_VG_T)/test_imap.py::test_store_flags_are_durable_and_expunge_removes \
               $(SAN_VG_T)/test_imap_mail.py::test_copy_and_move_with_copyuid \
               $(SAN_VG_T)/test_imap_mail.py::test_append_stored_with_uid_flags_and_date \
               $(SAN_VG_T)/test_imap_mail.py::test_two_sessions_see_each_others_changes \
               $(SAN_VG_T)/test_imap_idle.py::test_new_mail_flags_and_expunges_are_pushed \
               $(SAN_VG_T)/test_imap_tls.py::test_starttls_then_login \
               $(SAN_VG_T)/test_imap_fetch.py::test_line_ends_as_pop3_sends_them \
               $(SAN_VG_T)/test_imap_search.py::test_limits_and_errors

.PHONY: asan test-asan valgrind test-valgrind

asan: $(SAN_OUT)/picomail $(SAN_OUT)/picomail-test
valgrind: $(SAN_VG_OUT)/picomail $(SAN_VG_OUT)/picomail-test

$(SAN_OUT)/obj/%.o: src/%.c $(SAN_HDRS) $(SAN_BEARSSL_LIB)
	@mkdir -p $(@D)
	@echo "  CC-ASAN $<"
	@$(SAN_CC) $(SAN_WARN) $(SAN_FLAGS) -I$(SAN_BEARSSL)/inc -c $< -o $@

$(SAN_OUT)/obj-test/%.o: src/%.c $(SAN_HDRS) $(SAN_BEARSSL_LIB)
	@mkdir -p $(@D)
	@echo "  CC-ASAN $< (test)"
	@$(SAN_CC) $(SAN_WARN) $(SAN_FLAGS) -I$(SAN_BEARSSL)/inc -DPICOMAIL_TEST -c $< -o $@

$(SAN_OUT)/picomail: $(SAN_OBJS) $(SAN_BEARSSL_LIB)
	$(SAN_CC) $(SAN_FLAGS) -o $@ $(SAN_OBJS) $(SAN_BEARSSL_LIB)

$(SAN_OUT)/picomail-test: $(SAN_TEST_OBJS) $(SAN_BEARSSL_LIB)
	$(SAN_CC) $(SAN_FLAGS) -o $@ $(SAN_TEST_OBJS) $(SAN_BEARSSL_LIB)

$(SAN_VG_OUT)/obj/%.o: src/%.c $(SAN_HDRS) $(UNIT_BEARSSL_LIB)
	@mkdir -p $(@D)
	@echo "  CC-VG   $<"
	@$(UNIT_CC) $(SAN_WARN) $(SAN_VG_FLAGS) -I$(UNIT_BEARSSL)/inc -c $< -o $@

$(SAN_VG_OUT)/obj-test/%.o: src/%.c $(SAN_HDRS) $(UNIT_BEARSSL_LIB)
	@mkdir -p $(@D)
	@echo "  CC-VG   $< (test)"
	@$(UNIT_CC) $(SAN_WARN) $(SAN_VG_FLAGS) -I$(UNIT_BEARSSL)/inc -DPICOMAIL_TEST -c $< -o $@

$(SAN_VG_OUT)/picomail: $(SAN_VG_OBJS) $(UNIT_BEARSSL_LIB)
	$(UNIT_CC) $(SAN_VG_FLAGS) -o $@ $(SAN_VG_OBJS) $(UNIT_BEARSSL_LIB)

$(SAN_VG_OUT)/picomail-test: $(SAN_VG_TEST_OBJS) $(UNIT_BEARSSL_LIB)
	$(UNIT_CC) $(SAN_VG_FLAGS) -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc -o $@ \
		$(SAN_VG_TEST_OBJS) $(UNIT_BEARSSL_LIB)

# Like "make integration", the suite needs the test tools (make test-tools)
# and build/host (test_ship.py checks what ships).
# The reports directory is world-writable: the daemon drops to run_as after
# binding and must still be able to write its report.
test-asan: asan
	@rm -rf $(SAN_REPORTS) && mkdir -p $(SAN_REPORTS) && chmod 1777 $(SAN_REPORTS)
	@start=$$(date +%s); rc=0; \
	PICOMAIL_BUILD=$(CURDIR)/$(SAN_OUT) \
	ASAN_OPTIONS=$(SAN_ASAN_OPTIONS) UBSAN_OPTIONS=$(SAN_UBSAN_OPTIONS) \
		$(SAN_PYTHON) -m pytest -q $(PYTEST_JOBS) tests/integration || rc=$$?; \
	bash tests/sanitize/reports.sh "test-asan" $(SAN_REPORTS) $$start $$rc

test-valgrind: valgrind
	@rm -rf $(SAN_VG_REPORTS) && mkdir -p $(SAN_VG_REPORTS) && chmod 1777 $(SAN_VG_REPORTS)
	@start=$$(date +%s); rc=0; \
	PICOMAIL_BUILD=$(CURDIR)/$(SAN_VG_OUT) PICOMAIL_WRAP="$(SAN_VG_WRAP)" \
		$(SAN_PYTHON) -m pytest -q $(SAN_VG_TESTS) || rc=$$?; \
	bash tests/sanitize/reports.sh "test-valgrind" $(SAN_VG_REPORTS) $$start $$rc

.DEFAULT_GOAL := $(SAN_DEFAULT_GOAL)
