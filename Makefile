# petrel — GNU make build. `make` builds build/petrel and build/petrelctl;
# `make run` / `make test` install missing Debian packages first.
# SPDX-License-Identifier: Apache-2.0

BUILD    ?= build
CC       ?= cc
PKGS      = libuv rocksdb lua5.4 libcares openssl jansson libmicrohttpd libsystemd hiredis libcurl zlib libidn2
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS   ?= -O2 -g
ALL_CFLAGS = $(CFLAGS) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter -Wno-format-truncation \
            -Isrc $(PKG_CFLAGS) -MMD -MP -pthread
ALL_LIBS  = $(PKG_LIBS) -lcrypt -lm -pthread $(LDLIBS)

LIB_SRC  := $(filter-out src/core/main.c,$(wildcard src/*/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
PYTEST   ?= /usr/bin/python3 -m pytest

.SECONDARY:
.PHONY: all deps deps-test run test unit system fuzz asan bench clean check-config man install

all: $(BUILD)/petrel $(BUILD)/petrelctl $(BUILD)/petrel-sendmail

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/libpetrel.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/petrel: $(BUILD)/src/core/main.o $(BUILD)/libpetrel.a
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDFLAGS) $(ALL_LIBS)

$(BUILD)/petrelctl: $(BUILD)/tools/petrelctl.o $(BUILD)/tools/ctl_ops.o $(BUILD)/libpetrel.a
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDFLAGS) $(ALL_LIBS)

# sendmail(8) for applications: plain libc, no petrel library
$(BUILD)/petrel-sendmail: $(BUILD)/tools/petrel-sendmail.o
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDFLAGS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libpetrel.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDFLAGS) $(ALL_LIBS) -lcmocka

# ---- man pages (one Markdown source each, man/*.md -> roff) and `make install` ----
MAN_SRC  := $(wildcard man/*.md)
MAN_OUT  := $(MAN_SRC:man/%.md=$(BUILD)/man/%)
PREFIX   ?= /usr/local
SBINDIR  ?= $(PREFIX)/sbin
BINDIR   ?= $(PREFIX)/bin
MANDIR   ?= $(PREFIX)/share/man
DOCDIR   ?= $(PREFIX)/share/doc/petrel
SYSCONFDIR ?= /etc
UNITDIR  ?= $(PREFIX)/lib/systemd/system
SENDMAIL_LINK ?= yes   # also install $(SBINDIR)/sendmail -> petrel-sendmail

$(BUILD)/man/%: man/%.md scripts/mkman.py
	@mkdir -p $(dir $@)
	/usr/bin/python3 scripts/mkman.py $< $@

man: $(MAN_OUT)

install: all man
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) \
	  $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(DOCDIR) \
	  $(DESTDIR)$(SYSCONFDIR)/petrel $(DESTDIR)$(SYSCONFDIR)/logrotate.d \
	  $(DESTDIR)$(SYSCONFDIR)/fail2ban/filter.d
	install -m 0755 $(BUILD)/petrel $(BUILD)/petrel-sendmail $(DESTDIR)$(SBINDIR)/
	install -m 0755 $(BUILD)/petrelctl $(DESTDIR)$(BINDIR)/
	if [ "$(strip $(SENDMAIL_LINK))" = yes ]; then ln -sf petrel-sendmail $(DESTDIR)$(SBINDIR)/sendmail; fi
	sed 's|/usr/local/sbin/|$(SBINDIR)/|g' contrib/systemd/petrel.service > $(DESTDIR)$(UNITDIR)/petrel.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/petrel.service
	# the default config never replaces one already there
	[ -e $(DESTDIR)$(SYSCONFDIR)/petrel/petrel.lua ] || \
	  install -m 0640 contrib/etc/petrel.lua $(DESTDIR)$(SYSCONFDIR)/petrel/petrel.lua
	install -m 0644 contrib/logrotate/petrel $(DESTDIR)$(SYSCONFDIR)/logrotate.d/petrel
	install -m 0644 contrib/fail2ban/filter.d/petrel.conf $(DESTDIR)$(SYSCONFDIR)/fail2ban/filter.d/petrel.conf
	install -m 0644 $(BUILD)/man/petrel.lua.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 $(BUILD)/man/petrel.8 $(BUILD)/man/petrelctl.8 $(DESTDIR)$(MANDIR)/man8/
	cp -R contrib $(DESTDIR)$(DOCDIR)/
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/

deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

# `make run` also installs what README's first try types (swaks)
run:
	@scripts/deps.sh run
	@$(MAKE) --no-print-directory all
	@mkdir -p var
	exec $(BUILD)/petrel -c petrel.lua

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

system: all
	PETREL_BIN=$(abspath $(BUILD)/petrel) PETRELCTL_BIN=$(abspath $(BUILD)/petrelctl) \
	  $(PYTEST) -q tests/system $(PYTEST_ARGS)

# Each fuzz target runs for FUZZ_SECONDS under libFuzzer with ASan+UBSan. The
# library is compiled once with coverage instrumentation, then linked per target.
FUZZ_SECONDS ?= 15
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -g -O1 -Isrc $(PKG_CFLAGS) -fno-sanitize-recover=undefined
FUZZ_OBJ := $(LIB_SRC:%.c=build/fuzz/%.o)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)

build/fuzz/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_OBJ)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined $^ -o $@ $(PKG_LIBS) -lcrypt -lm -pthread

fuzz: $(FUZZ_BIN)
	@set -e; for f in $(FUZZ_BIN); do echo "== $$f ($(FUZZ_SECONDS)s)"; \
	  if ! $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 -artifact_prefix=build/fuzz/ \
	      > $$f.log 2>&1; then \
	    tail -40 $$f.log; echo "FAILED: $$f (log: $$f.log)"; exit 1; fi; \
	  tail -1 $$f.log; done

test: deps-test
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory system
	@$(MAKE) --no-print-directory fuzz

# ASan+UBSan build in build-asan/, then unit and system tests against it.
asan:
	@$(MAKE) --no-print-directory BUILD=build-asan CC=gcc \
	  CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" all unit
	PETREL_BIN=$(abspath build-asan/petrel) PETRELCTL_BIN=$(abspath build-asan/petrelctl) \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 $(PYTEST) -q tests/system $(PYTEST_ARGS)

bench:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory all
	/usr/bin/python3 bench/bench.py $(BENCH_ARGS)

clean:
	rm -rf build build-asan build/fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---- Fault runs (issue 10). Short versions run inside `make system` as
# tests/system/test_faults_*.py; these are the long ones.
.PHONY: chaos soak fuzz-long tsan

# SIGKILL petrel CHAOS_KILLS times (+ CHAOS_TERMS SIGTERMs) under SMTP+HTTP load and a
# flaky next hop; fails if an acknowledged message is lost or the spool is left non-empty.
CHAOS_KILLS ?= 100
CHAOS_TERMS ?= 5
chaos: all
	PETREL_BIN=$(abspath $(BUILD)/petrel) /usr/bin/python3 tests/chaos/chaos.py \
	  --kills $(CHAOS_KILLS) --terms $(CHAOS_TERMS) $(CHAOS_ARGS)

# Mixed load at SOAK_RATE msg/s for DURATION; table, soak.tsv, soak.png, summary.json
# in build/soak/.
DURATION ?= 1h
SOAK_RATE ?= 20
soak: all
	PETREL_BIN=$(abspath $(BUILD)/petrel) /usr/bin/python3 tests/soak/soak.py \
	  --duration $(DURATION) --rate $(SOAK_RATE) --out build/soak $(SOAK_ARGS)

# Every fuzz target for FUZZ_LONG_SECONDS of its own CPU time, FUZZ_LONG_JOBS at a
# time (default: one per core), its corpus kept (and grown) in tests/fuzz/corpus/<target>/;
# findings land in build/fuzz/<target>-crash-* (or -timeout-, -leak-), and one line per
# target is appended to build/fuzz/fuzz-long.tsv.
FUZZ_LONG_SECONDS ?= 3600
FUZZ_LONG_JOBS ?= $(shell nproc)
FUZZ_LONG_TARGETS ?= $(FUZZ_BIN)
fuzz-long: $(FUZZ_LONG_TARGETS)
	/usr/bin/python3 tests/fuzz/fuzz_long.py --cpu-seconds $(FUZZ_LONG_SECONDS) \
	  --jobs $(FUZZ_LONG_JOBS) $(FUZZ_LONG_TARGETS)

# ThreadSanitizer build in build-tsan/, then the system tests that exercise the spool,
# delivery and HTTP threads. A race report makes petrel exit 66, which fails the test.
TSAN_TESTS ?= tests/system/test_durability.py tests/system/test_delivery.py \
	tests/system/test_http.py tests/system/test_http_inject.py tests/system/test_faults_disk.py
tsan:
	@$(MAKE) --no-print-directory BUILD=build-tsan CC=gcc \
	  CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=thread" LDFLAGS="-fsanitize=thread" all
	PETREL_BIN=$(abspath build-tsan/petrel) PETRELCTL_BIN=$(abspath build-tsan/petrelctl) \
	  TSAN_OPTIONS="halt_on_error=0 exitcode=66 second_deadlock_stack=1 suppressions=$(abspath tests/tsan.supp)" \
	  $(PYTEST) -q $(TSAN_TESTS) $(PYTEST_ARGS)
