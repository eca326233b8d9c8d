# The Makefile drives CMake; CMakeLists.txt is the real build.
#   make demo   install what is missing, build, run the main job
#   make test   install what is missing, build, pass every test (also under ASan+UBSan)
JOBS      ?= $(shell nproc)
BUILD     ?= build
ASAN      ?= build-asan
FUZZBUILD ?= build-fuzz
FUZZ_SECONDS ?= 30
# make test fuzzes from a fixed seed so its result can be repeated; the long
# exploring runs (make fuzz-explore) start from a new seed each time.
FUZZ_SEED ?= 1
FUZZ_EXPLORE_SECONDS ?= 600
SOAK_SECONDS ?= 600
# Each soak starts from a new seed (the time) so repeated soaks explore new
# runs; a failure prints its own seed and the command that replays it.
SOAK_FIRST_SEED ?= $(shell date +%s)000

.PHONY: all deps build build-asan build-fuzz test test-release test-asan test-fuzz fuzz-explore demo soak fuzz bench format format-check install clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DFL_SANITIZE=ON
	cmake --build $(ASAN) -j $(JOBS)

build-fuzz: deps
	CC=clang CXX=clang++ cmake -S . -B $(FUZZBUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFL_FUZZ=ON
	cmake --build $(FUZZBUILD) -j $(JOBS)

test: test-release test-asan test-fuzz
	@echo "make test: all suites passed"

test-release: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# Unit, scenario and simulation tests again under ASan+UBSan, and the
# in-process engine clusters (label asan: real sockets and disks, quick).
test-asan: build-asan
	cd $(ASAN) && ctest --output-on-failure -j $(JOBS) -L 'unit|sim|asan'

test-fuzz: build-fuzz
	FUZZ_SEED=$(FUZZ_SEED) bash fuzz/run.sh $(FUZZBUILD) $(FUZZ_SECONDS)

fuzz-explore: build-fuzz
	bash fuzz/run.sh $(FUZZBUILD) $(FUZZ_EXPLORE_SECONDS)

fuzz: build-fuzz
	@echo "fuzz targets are in $(FUZZBUILD)/fuzz; run them with: bash fuzz/run.sh $(FUZZBUILD) SECONDS"

demo: build
	./$(BUILD)/bench/flotilla-bench

soak: build
	./$(BUILD)/tests/sim/flotilla-sim --soak $(SOAK_SECONDS) --first-seed $(SOAK_FIRST_SEED)

bench: build
	./$(BUILD)/bench/raft-bench
	./$(BUILD)/bench/raft-sim-bench
	./$(BUILD)/bench/wal-bench

# libflotilla.so, flotilla.h and flotilla.pc (and whatever else the build
# installs) under PREFIX, e.g. `make install PREFIX=$HOME/.local`.
PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

format:
	clang-format -i $$(git ls-files '*.c' '*.h' '*.cc')

format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h' '*.cc')

clean:
	rm -rf $(BUILD) $(ASAN) $(FUZZBUILD)
