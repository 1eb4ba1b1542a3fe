# The two commands for a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
SWIFT ?= swift
export SUTURE_CACHE ?= $(HOME)/.cache/suture
APT_PACKAGES := libcapstone-dev liblzma-dev libzstd-dev zlib1g-dev binutils gcc qemu-system-x86 \
                busybox-static cpio xz-utils gdbserver memcached

.PHONY: demo test deps build fetch bench clean

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

fetch: build
	$(SWIFT) run suture lab fetch

demo: fetch
	$(SWIFT) run suture demo

test: fetch
	$(SWIFT) test --parallel --num-workers 2

clean:
	rm -rf .build
