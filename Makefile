# petrel — GNU make build. `make` builds build/petrel and build/petrelctl;
# `make run` / `make test` install missing Debian packages first.
# SPDX-License-Identifier: Apache-2.0

BUILD    ?= build
CC       ?= cc
PKGS      = libuv rocksdb lua5.4 libcares openssl jansson libmicrohttpd hiredis
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
.PHONY: all deps deps-test run test unit system fuzz asan bench clean check-config

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

deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

run: deps
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
