# Two entry points do all the set-up on a fresh machine:
#   make demo   builds .venv from nothing and runs the virtual System demo
#   make test   builds .venv from nothing and runs lint, type checks and the whole test suite
# (.ci/run installs the Debian packages the tests need first, then runs `make test`.)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# test files run on this many processes (pytest-xdist), a file's tests together on one
TEST_JOBS ?= 2

.PHONY: demo test lint venv clean install-support deb

venv: $(STAMP)

$(STAMP): pyproject.toml drivers/canbus/pyproject.toml drivers/i2c/pyproject.toml \
		drivers/mcuboot/pyproject.toml drivers/esp32/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' -e 'drivers/canbus[test]' -e drivers/i2c \
		-e drivers/mcuboot -e drivers/esp32
	touch $@

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check orchestrator_core
	$(BIN)/mypy orchestrator_core

test: lint
	@# pytest exits 5 when it collected no test: that must fail loudly, not pass
	$(BIN)/pytest -p no:cacheprovider -n $(TEST_JOBS) --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV)

# the Mender-side files (Update Module, inventory script, rootfs-image Interface, systemd
# unit) into the standard paths; DESTDIR=/path/to/rootfs for an image being built
# (`make -C support install` does the same without Python)
install-support: $(STAMP)
	$(BIN)/mender-orchestrator install-support --destdir "$(or $(DESTDIR),/)"

# the Debian package, built with dpkg-deb from this checkout, into dist/ (docs/packaging.md)
deb: $(STAMP)
	$(BIN)/python support/debian/build_deb.py dist

# the tests that exercise each dependency, with every dependency at its floor, in .venv/lowest
# (support/lowest_versions.py; docs/packaging.md "Dependency floors")
.PHONY: test-lowest
test-lowest: $(STAMP)
	$(BIN)/python support/lowest_versions.py

# the packages as users get them from pip, with the `fast` extra (ISA-L for gzip): no
# editable-install import hooks, which cost every start of the development venv about 9 ms;
# for the benchmarks, e.g. `.venv/release/bin/python bench/cli_startup.py`. Without the extra
# (as the Debian package is), gzip goes through the standard library's zlib.
.PHONY: release-venv
release-venv: $(STAMP)
	$(PYTHON) -m venv $(VENV)/release
	$(VENV)/release/bin/pip install --quiet --upgrade pip
	$(VENV)/release/bin/pip install --quiet '.[fast]' drivers/canbus drivers/i2c drivers/mcuboot \
		drivers/esp32
