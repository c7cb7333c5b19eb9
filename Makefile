# VC — the two commands: `make demo` (run the whole thing) and `make test` (run every test).
# Both install what is missing (apt packages, .venv), start the project's private services under
# ./var (by pid file) and are re-runnable. `make stop` stops what they started.
SHELL := /bin/bash
VAR ?= $(CURDIR)/var
export VC_VAR := $(VAR)
PY := $(CURDIR)/.venv/bin/python3
PYTEST_ARGS ?=
# make demo HOSTS=N: N-1 namespace hosts (tools/host.sh) besides this machine's libvirtd
HOSTS ?= 1
export VC_HOSTS := $(HOSTS)
# make demo FRONTENDS=2: two frontends on a 3-node Galera cluster on loopback (tools/galera.sh):
# var/vc.conf (Galera node 1, state var/state) and var/vc2.conf (node 2, state var/state2), both
# frontends' ticks (README "Two frontends (Galera)")
FRONTENDS ?= 1
# make demo ISOLATION=ovs: each cluster a VLAN of Open vSwitch bridge OVS_BRIDGE (tools/ovs.sh
# starts a userspace OVS where none runs); empty: what var/vc.conf says (vxlan when written anew)
ISOLATION ?=
OVS_BRIDGE ?= vcovs0
ifeq ($(FRONTENDS),2)
FE1 := VC_DB=galera VC_FRONTEND=1
endif

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
	@for i in $$(seq 2 $(HOSTS)); do bash tools/host.sh up vh$$i >/dev/null || exit 1; done
	@if [ "$(FRONTENDS)" = 2 ]; then bash tools/galera.sh up; fi
	@$(FE1) VC_ISOLATION=$(ISOLATION) VC_OVS_BRIDGE=$(OVS_BRIDGE) bash tools/write-config.sh $(VAR)/vc.conf
	@if [ "$(FRONTENDS)" = 2 ]; then VC_DB=galera VC_FRONTEND=2 bash tools/write-config.sh $(VAR)/vc2.conf; fi
	@VC_CONFIG=$(VAR)/vc.conf $(PY) sbin/vc_ctl.py db upgrade

demo: config
	@if grep -qx 'isolation = ovs' $(VAR)/vc.conf; then \
	  bash tools/ovs.sh start "$$(sed -n 's/^ovs_bridge *= *//p' $(VAR)/vc.conf)"; fi
	@bash tools/public-net.sh start
	@VC_CONFIG=$(VAR)/vc.conf bash tools/web.sh start
	@VC_CONFIG=$(VAR)/vc.conf bash tools/metad.sh start
	@VC_CONFIG=$(VAR)/vc.conf bash tools/demo.sh
	@VC_CONFIG=$(VAR)/vc.conf bash tools/ticker.sh start
	@if [ "$(FRONTENDS)" = 2 ]; then \
	  VC_CONFIG=$(VAR)/vc2.conf $(PY) sbin/vc_ctl.py target key >/dev/null && \
	  bash tools/storage.sh authorize $(VAR)/state2/ssh/id_ed25519.pub >/dev/null && \
	  VC_CONFIG=$(VAR)/vc2.conf bash tools/ticker.sh start 2 && \
	  echo "Second frontend: VC_CONFIG=$(VAR)/vc2.conf ./sbin/vc_ctl.py list (Galera node 2; both ticks run)"; fi

test: core
	@VC_VAR=$(VAR) $(PY) -m pytest -q -ra $(PYTEST_ARGS) tests

stop:
	@bash tools/web.sh stop
	@bash tools/ticker.sh stop
	@bash tools/ticker.sh stop 2
	@bash tools/metad.sh stop
	@bash tools/demo.sh --stop-clusters
	-@$(PY) -c 'import sys; from vc import remote; remote.close_ssh_mux(remote.ssh_mux_dir(sys.argv[1]))' $(VAR)/state
	@bash tools/ovs.sh stop
	@bash tools/public-net.sh stop
	@bash tools/storage.sh stop
	@bash tools/stack.sh db-stop
	@bash tools/galera.sh down
	@for d in $(VAR)/hosts/*/; do [ -d "$$d" ] && bash tools/host.sh down "$$(basename "$$d")"; done; true
	@bash tools/virt.sh stop

status:
	@bash tools/web.sh status
	@bash tools/ticker.sh status
	@if [ -d $(VAR)/galera ]; then bash tools/ticker.sh status 2; bash tools/galera.sh status; fi
	@bash tools/metad.sh status
	@bash tools/stack.sh status
	@bash tools/virt.sh status
	@bash tools/public-net.sh status
	@bash tools/ovs.sh status
	@bash tools/storage.sh status

# the benchmarks (figures in the README); each cleans up after itself
bench: services
	@bash tools/public-net.sh start
	@$(PY) bench/admission.py
	@$(PY) bench/cluster_start.py
	@$(PY) bench/seed.py
	@$(PY) bench/tick.py
	@$(PY) bench/storage.py
	@$(PY) bench/network.py
	@$(PY) bench/web.py

lint:
	@$(PY) -m ruff check vc sbin tests bench

# removes the private database and everything else under ./var (asks nothing: be sure)
clean-var: stop
	rm -rf $(VAR)
