# weft: the two commands a newcomer needs are `make run` and `make test`.
#
#   make run         install missing Debian packages, build Release, run weftd on 127.0.0.1:8080
#   make test        install, build Release, run every test (ctest)
#   make test-asan   the suite under ASan + UBSan
#   make test-tsan   the suite under TSan
#   make bench       build and run the benchmarks next to their Go (and nginx) peers
#
# Installing is idempotent: dpkg-query decides what is missing, and nothing runs apt when
# every package is present.

SHELL := /bin/bash
JOBS ?= $(shell nproc)
BUILD := build

# Every dependency, each a Debian package (see README.md for why each one is here).
DEPS := build-essential cmake pkg-config \
        libasio-dev libboost-context-dev libspdlog-dev libfmt-dev node-llhttp \
        libgtest-dev libgmock-dev libbenchmark-dev \
        libtomlplusplus-dev libcli11-dev nlohmann-json3-dev zlib1g-dev libdw-dev \
        curl wrk golang-go nginx strace

.PHONY: all deps build run test test-asan test-tsan bench clean

all: build

deps:
	@missing=$$(for p in $(DEPS); do \
	    dpkg-query -W -f='$${db:Status-Abbrev}' $$p 2>/dev/null | grep -q '^ii' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(BUILD)/release/CMakeCache.txt:
	cmake -S . -B $(BUILD)/release -DCMAKE_BUILD_TYPE=Release -DWEFT_SANITIZE=none

$(BUILD)/asan/CMakeCache.txt:
	cmake -S . -B $(BUILD)/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWEFT_SANITIZE=asan

$(BUILD)/tsan/CMakeCache.txt:
	cmake -S . -B $(BUILD)/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWEFT_SANITIZE=tsan

build: deps $(BUILD)/release/CMakeCache.txt
	cmake --build $(BUILD)/release -j $(JOBS)

run: build
	./$(BUILD)/release/server/weftd

test: build
	cd $(BUILD)/release && ctest --output-on-failure -j $(JOBS)

test-asan: deps $(BUILD)/asan/CMakeCache.txt
	cmake --build $(BUILD)/asan -j $(JOBS)
	cd $(BUILD)/asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

test-tsan: deps $(BUILD)/tsan/CMakeCache.txt
	cmake --build $(BUILD)/tsan -j $(JOBS)
	cd $(BUILD)/tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  ctest --output-on-failure -j $(JOBS)

bench: build
	./bench/run_benchmarks.sh $(BUILD)/release
	./bench/echo_bench.sh $(BUILD)/release
	./bench/http_bench.sh $(BUILD)/release
	./bench/pprof_bench.sh $(BUILD)/release

clean:
	rm -rf $(BUILD)
