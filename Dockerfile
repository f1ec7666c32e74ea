# One image for every Grid process: `grid master`, `grid agent ...`, `grid flower`, and the
# default storage node (`grid-node`, which the docker platform runs from this same image).
#
#   docker build -t grid:latest .
#   docker run --rm grid:latest --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY grid ./grid
RUN pip install ".[docker,flower]" \
    && rm -rf /src \
    && useradd --create-home --home-dir /var/lib/grid --uid 1000 grid \
    && install -d -o grid -g grid /data

# /data: where a node's data volume is mounted (DockerConfig.data_path); a new named volume
# takes this folder's owner, so nodes run as `grid` can write it.

# GRID_HOME and process-platform nodes live under the working folder.
WORKDIR /var/lib/grid
USER grid
# The conventional port of a node on a bridge network (DockerConfig.container_port).
EXPOSE 8000

ENTRYPOINT ["grid"]
CMD ["--help"]
