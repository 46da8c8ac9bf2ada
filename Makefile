# The two commands (README): `make demo` and `make test`. Both set up .venv first (fast when it exists).
VENV ?= .venv
PY := $(VENV)/bin/python
# ROS 2 isolation for tests: own domain, loopback discovery only, logs in a temp dir.
ROS_TEST_ENV := ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(( 20 + $$$$ % 70 ))} ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST \
	RMW_IMPLEMENTATION=rmw_fastrtps_cpp ROS_LOG_DIR=$${TMPDIR:-/tmp}/latent_vs_ros_logs \
	OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg

.PHONY: setup demo test test-fast bench clean
setup:
	@bash scripts/setup_env.sh

demo: setup
	@$(ROS_TEST_ENV) AMENT_PREFIX_PATH=$(abspath $(VENV)) $(VENV)/bin/latent-vs demo

test: setup
	@$(ROS_TEST_ENV) AMENT_PREFIX_PATH=$(abspath $(VENV)) $(PY) -m pytest -q test

test-fast: setup
	@$(ROS_TEST_ENV) AMENT_PREFIX_PATH=$(abspath $(VENV)) $(PY) -m pytest -q -m "not slow" test

bench: setup
	@$(VENV)/bin/latent-vs bench --methods pbvs,dvs,mlvs-k1,mlvs-k50 --tasks 500

# also the pose-bank cache (~160 MB per model; it keeps the 3 most recently used by itself)
clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
	rm -rf "$${LATENT_VS_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/latent_vs}"
