# The two commands for a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
SWIFT ?= swift
export SUTURE_CACHE ?= $(HOME)/.cache/suture
# Build: capstone, lzma, zstd, zlib. Lab: qemu, busybox, cpio. Tests' oracles and inputs: binutils
# (objdump, readelf), llvm (llvm-mc for arm64 objects), binutils-aarch64-linux-gnu, gdb (gcore),
# gdbserver, zstd/xz, patch. A live daemon to patch: memcached. Kernel rebuilds (suture build): gcc-12 and kbuild's tools. Benchmarks: hyperfine.
APT_PACKAGES := libcapstone-dev liblzma-dev libzstd-dev zlib1g-dev binutils gcc gcc-12 qemu-system-x86 \
                busybox-static cpio xz-utils zstd gdb gdbserver llvm binutils-aarch64-linux-gnu patch \
                kmod bison flex libelf-dev libssl-dev bc dwarves hyperfine valgrind memcached

.PHONY: demo test deps build inside fetch bench clean

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing: $$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "Missing packages. Run: sudo apt-get install -y $$missing"; exit 1; \
	  fi; \
	fi

build: deps
	$(SWIFT) build

# Suture for the lab guest (`suture lab up --inside`, the lab tests): the Swift runtime and Foundation
# linked in statically, so only capstone, lzma, zstd, zlib, libstdc++ and libc go along. Its own scratch
# path keeps the debug build's objects; no debug info and a stripped symbol table (-gnone, -s): the guest
# unpacks the binary into RAM, and this saves 24 MB of it. Sources/Lab/GuestSuture.swift names this path.
inside: deps
	$(SWIFT) build -c release --static-swift-stdlib --product suture --scratch-path .build-inside \
	  -Xswiftc -gnone -Xlinker -s

fetch: build
	$(SWIFT) run suture lab fetch

demo: fetch
	$(SWIFT) run suture demo

# Swift Testing runs suites concurrently; lab suites serialise themselves (one VM at a time).
test: fetch inside
	$(SWIFT) test

clean:
	rm -rf .build .build-inside
