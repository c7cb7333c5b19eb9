# VC — the two commands: `make demo` (run the whole thing) and `make test` (run every test).
# Both install what is missing (apt packages, .venv), start the project's private services under
# ./var (by pid file) and are re-runnable. `make stop` stops what they started.
SHELL := /bin/bash
VAR ?= $(CURDIR)/var
export VC_VAR := $(VAR)
PY := $(CURDIR)/.venv/bin/python3
PYTEST_ARGS ?=

.PHONY: demo test stop install core services config status clean-var lint bench

install:
	@bash tools/stack.sh install
	@bash tools/storage.sh install

# what the tests need (they start their own sshd, tgtd and Apache on free ports)
core: install
	@bash tools/stack.sh db-start
	@bash tools/virt.sh start
	@bash tools/make-guest.sh $(VAR)/guest
	@bash tools/make-image.sh $(VAR)/images/debian-12.qcow2 >/dev/null

# ... plus the demo's iSCSI target host (sshd on 127.0.0.1:2222, tgtd portal 127.0.0.1:3260)
services: core
	@bash tools/storage.sh start >/dev/null

config: services
	@bash tools/write-config.sh $(VAR)/vc.conf
	@VC_CONFIG=$(VAR)/vc.conf $(PY) sbin/vc_ctl.py db upgrade

demo: config
	@bash tools/public-net.sh start
	@VC_CONFIG=$(VAR)/vc.conf bash tools/web.sh start
	@VC_CONFIG=$(VAR)/vc.conf bash tools/demo.sh
	@VC_CONFIG=$(VAR)/vc.conf bash tools/ticker.sh start

test: core
	@VC_VAR=$(VAR) $(PY) -m pytest -q -ra $(PYTEST_ARGS) tests

stop:
	@bash tools/web.sh stop
	@bash tools/ticker.sh stop
	@bash tools/demo.sh --stop-clusters
	@bash tools/public-net.sh stop
	@bash tools/storage.sh stop
	@bash tools/stack.sh db-stop
	@bash tools/virt.sh stop

status:
	@bash tools/web.sh status
	@bash tools/ticker.sh status
	@bash tools/stack.sh status
	@bash tools/virt.sh status
	@bash tools/public-net.sh status
	@bash tools/storage.sh status

# the benchmarks (figures in the README); each cleans up after itself
bench: services
	@bash tools/public-net.sh start
	@$(PY) bench/admission.py
	@$(PY) bench/cluster_start.py
	@$(PY) bench/tick.py
	@$(PY) bench/storage.py
	@$(PY) bench/network.py
	@$(PY) bench/web.py

lint:
	@$(PY) -m ruff check vc sbin tests bench

# removes the private database and everything else under ./var (asks nothing: be sure)
clean-var: stop
	rm -rf $(VAR)
