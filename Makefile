# Kurma: the two commands that matter are `make boot` and `make test` (see README.md).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: test boot initrd deps apt-deps lint bench clean podinit proto

test: deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint: deps
	$(PY) -m ruff check kurma tests bench build

deps: apt-deps $(VENV)/.installed podinit

podinit: apt-deps
	$(MAKE) -s -C kurma/runtime/podinit

apt-deps:
	build/apt-deps.sh

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

proto: $(VENV)/.installed
	$(PY) build/gen_proto.py

bench: deps
	$(PY) bench/import.py
	$(PY) bench/pod_start.py
	$(PY) bench/api.py
	$(PY) bench/pull.py
	$(PY) bench/net.py
	$(PY) bench/boot.py

# The kernel (Debian's, resolved at build time) and the initrd with the images in its store.
initrd: deps
	$(PY) build/initrd.py --out out

# Boots out/vmlinux + out/initrd.img under qemu with a fresh development OEM disk and PKI
# (out/dev/); the console is this terminal. Without a terminal: boots to the login prompt.
boot: initrd
	$(PY) build/vm/boot.py --out out

clean:
	rm -rf $(VENV) out

.PHONY: images
images: deps  ## the service images (images/*) as ACIs in out/images
	$(PY) build/images.py --out out/images
