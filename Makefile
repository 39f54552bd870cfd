# wideep-launch — build, test, benchmark, local Slurm cluster and demo.
GO        ?= go
BIN       := bin/wideep-launch
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/wideep/wideep-launch/cmd/wideep-launch/cli.Version=$(VERSION)
# Debian packages the tests use for real components (see README "What is real").
DEB_PKGS  := gcc libc6-dev curl slurmctld slurmd slurm-client munge etcd-server nats-server clustershell iproute2 util-linux procps squashfs-tools nftables

.PHONY: all build test test-e2e faults bench bench-hostlist fuzz deps cluster-up cluster-down demo clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/wideep-launch

# Installs the Debian packages the tests need when they are missing (root, apt-get).
deps:
	@missing=""; for c in scontrol:slurm-client slurmd:slurmd slurmctld:slurmctld munged:munge etcd:etcd-server nats-server:nats-server nodeset:clustershell ip:iproute2 nsenter:util-linux curl:curl gcc:gcc mksquashfs:squashfs-tools nft:nftables; do \
	  command -v $${c%%:*} >/dev/null 2>&1 || missing="$$missing $${c##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  made=0; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made=1; }; \
	  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends $(DEB_PKGS) >/dev/null; rc=$$?; \
	  [ $$made = 1 ] && rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi

# The README's test command: unit tests, differential tests against real
# scontrol, real etcd/NATS, and end-to-end jobs on a real 8-node Slurm.
test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...
	$(GO) test -count=1 -race -timeout 10m ./launcher/... ./enroot/... ./cmd/wideep-launch/cli/

# Only the end-to-end jobs on the local 8-node Slurm.
test-e2e: deps
	$(GO) test -count=1 -timeout 20m -v -run 'TestE2E' ./cmd/wideep-launch/

# The fault matrix (issue #12): every fault of README "A job is a gang", with and
# without srun --kill-on-bad-exit, on the local 8-node Slurm; prints the table.
faults: deps build
	@rm -f faults.md; WIDEEP_FAULTS_REPORT=$(CURDIR)/faults.md $(GO) test -count=1 -timeout 30m -v -run TestE2EFaultMatrix ./cmd/wideep-launch/; \
	  rc=$$?; echo; cat faults.md 2>/dev/null || echo "no faults.md: the test stopped before its report"; exit $$rc

# The benchmark report (issue #12): every benchmark once — hostlist shapes vs
# scontrol and nodeset, launcher overhead and peak RSS, the Go benchmarks, the
# 8-node lab — into launcher/bench/REPORT.md (printed too); about 4 minutes on 2 cores.
# Figures are printed, never asserted. ROUNDS, HOSTLIST_RUNS, RUNS, PARTS: see report.sh.
bench: deps build
	GO=$(GO) bash launcher/bench/report.sh $(BIN)

# Hostlist expansion alone: six expression shapes vs scontrol and nodeset (the table).
bench-hostlist: deps
	GO=$(GO) FIGURES_OUT=/dev/null bash slurm/hostlistbench/bench.sh

# Each target runs FUZZTIME: hostlists, the Slurm tasks-per-node format,
# --prefill-arg entries, rendezvous messages and the frontend's /health body.
FUZZTIME ?= 10s
fuzz:
	$(GO) test ./slurm -run '^$$' -fuzz '^FuzzExpand$$' -fuzztime $(FUZZTIME)
	$(GO) test ./slurm -run '^$$' -fuzz '^FuzzParseTasksPerNode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./launcher/deploy -run '^$$' -fuzz '^FuzzParseArgEdit$$' -fuzztime $(FUZZTIME)
	$(GO) test ./launcher/deploy -run '^$$' -fuzz '^FuzzExpandJobHost$$' -fuzztime $(FUZZTIME)
	$(GO) test ./launcher/rendezvous -run '^$$' -fuzz '^FuzzReadMessages$$' -fuzztime $(FUZZTIME)
	$(GO) test ./launcher/health -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)

cluster-up: deps
	bash slurm/lab/up.sh

cluster-down:
	bash slurm/lab/down.sh

demo: deps build
	bash examples/demo.sh $(BIN)

clean:
	rm -rf bin
