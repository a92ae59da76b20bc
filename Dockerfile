# gemini-ledger's flows in an image, for a Prefect Docker work pool (README: "Workers on
# other machines"). Built from the repository alone:
#
#   docker build -t gemini-ledger:latest .
#
# Every dependency is installed from requirements.lock at its pinned version and hash, then
# the project itself with --no-deps, as scripts/_venv.sh does for .venv. The deployments'
# entrypoints (flows/tick.py:tick, ...) are paths, so the source stays in the working
# directory /opt/gemini-ledger, which the Docker deployments name as their working directory.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /opt/gemini-ledger

# The lock first: its layer is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN python -m pip install --require-hashes --no-deps -r requirements.lock

COPY pyproject.toml README.md prefect.yaml ./
COPY ledger ./ledger
COPY flows ./flows
COPY emulator ./emulator
RUN python -m pip install --no-deps --editable . --config-settings editable_mode=compat \
    && useradd --create-home --uid 10001 ledger \
    && mkdir -p var && chown ledger var

# Runs write nothing but the SQLite ledger and the examples' outputs (under var/).
USER ledger

# The Docker worker starts each run with its own command (prefect flow-run execute); this
# default is for trying the image: docker run --rm gemini-ledger:latest
CMD ["gemini-ledger", "--help"]
