# picomail - the one entry point: make, make run, make test, make bench.
#
#   make                 build/$(BOARD)/picomail (static, musl, BearSSL, stripped)
#                        and build/$(BOARD)/picomail-test (fault seam, malloc counter)
#   make run             build and run the daemon in the foreground on loopback
#   make test            install what is missing, build, run every test
#   make bench           the benchmark report
#   make BOARD=aarch64   cross-compile with board/aarch64/board.mk

BOARD ?= host
BUILD := build/$(BOARD)

ifneq ($(BOARD),host)
include board/$(BOARD)/board.mk
else
CC := musl-gcc
endif

BEARSSL := $(BUILD)/bearssl
OPT ?= -Os
CFLAGS_ALL := -std=c11 -D_GNU_SOURCE $(OPT) -Wall -Wextra -Werror \
	-ffunction-sections -fdata-sections -I$(BEARSSL)/inc $(BOARD_CFLAGS) $(CFLAGS)
LDFLAGS_ALL := -static -Wl,--gc-sections $(LDFLAGS)
LIBS := $(BEARSSL)/lib/libbearssl.a

SRCS := $(filter-out src/testalloc.c,$(wildcard src/*.c))
OBJS := $(SRCS:src/%.c=$(BUILD)/obj/%.o)
TEST_OBJS := $(SRCS:src/%.c=$(BUILD)/obj-test/%.o) $(BUILD)/obj-test/testalloc.o
HEADERS := $(wildcard src/*.h)

PYTHON := /usr/bin/python3
DEPS := board/common/deps.sh

.PHONY: all deps run test unit integration bench clean
all: $(BUILD)/picomail $(BUILD)/picomail-test

deps:
	@bash $(DEPS) build $(addprefix pkg:,$(BOARD_PACKAGES))

$(LIBS):
	@QEMU="$(QEMU)" BEARSSL_CFLAGS="$(BOARD_CFLAGS)" $(if $(AR),AR="$(AR)") \
		bash board/common/bearssl.sh $(CC) $(BEARSSL)

$(BUILD)/obj/%.o: src/%.c $(HEADERS) $(LIBS)
	@mkdir -p $(@D)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/obj-test/%.o: src/%.c $(HEADERS) $(LIBS)
	@mkdir -p $(@D)
	@echo "  CC-TEST $<"
	@$(CC) $(CFLAGS_ALL) -DPICOMAIL_TEST -c $< -o $@

$(BUILD)/picomail: $(OBJS) $(LIBS)
	$(CC) $(LDFLAGS_ALL) -s -o $@ $(OBJS) $(LIBS)

$(BUILD)/picomail-test: $(TEST_OBJS) $(LIBS)
	$(CC) $(LDFLAGS_ALL) -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc -o $@ $(TEST_OBJS) $(LIBS)

# A demo daemon on loopback ports with its Maildir under ./run/.
run: deps all
	@bash tests/tools/run-demo.sh $(BUILD)/picomail

-include tests/unit/unit.mk

integration: all
	@bash $(DEPS) test
	$(PYTHON) -m pytest -q tests/integration

test: deps
	@bash $(DEPS) test
	$(MAKE) all
	$(MAKE) unit
	$(PYTHON) -m pytest -q tests/integration

bench: deps all
	@bash $(DEPS) bench
	@bash tests/bench/bench.sh $(BUILD)/picomail

clean:
	rm -rf build/host/obj build/host/obj-test build/host/picomail build/host/picomail-test build/unit
