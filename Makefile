# Two set-up commands for a fresh clone (see README):
#   make study   -- creates .venv, installs jaxir, runs the main study on the bundled photos
#   make test    -- creates .venv-test, installs jaxir with the test references, runs the whole suite
PYTHON ?= python3
VENV := .venv
TEST_VENV := .venv-test
STUDY_OUT ?= runs/study
BASICSR := basicsr==1.4.2
# k-diffusion's sampling.py is the reference of the sigma-space samplers; its package pulls a training stack.
KDIFFUSION := k-diffusion==0.1.1.post1 torchsde==0.2.6 trampoline==0.1.2
# taming-transformers' PatchGAN and GAN losses (the CompVis files), reference of jaxir.train.adversarial; its package
# requires pytorch-lightning, which those files do not use.
TAMING := taming-transformers-rom1504==0.0.6
# Faster convolutions on x86 CPUs with equal outputs (see README, "Speed").
export XLA_FLAGS ?= --xla_cpu_experimental_ynn_fusion_type=

.PHONY: study test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e .
	touch $@

$(TEST_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/pip install -q --upgrade pip
	$(TEST_VENV)/bin/pip install -q -e '.[test]'
	$(TEST_VENV)/bin/pip install -q --no-deps $(BASICSR) $(KDIFFUSION) $(TAMING)
	touch $@

study: $(VENV)/.installed
	$(VENV)/bin/jaxir study --out $(STUDY_OUT)

test: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python -m pytest -n 2 --dist loadfile

clean:
	rm -rf $(VENV) $(TEST_VENV)
