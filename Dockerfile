# The operator image: a small Python base, the package installed into a virtualenv, a non-root user,
# and nothing written at run time (works with readOnlyRootFilesystem: true).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE requirements.lock ./
# The dependencies exactly as locked (versions and hashes, `make lock`), then the package alone.
RUN python -m venv /opt/ftso && /opt/ftso/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
COPY operator ./operator
RUN /opt/ftso/bin/pip install --no-cache-dir --no-deps .

FROM python:3.11-slim
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin ftso
COPY --from=build /opt/ftso /opt/ftso
ENV PATH=/opt/ftso/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["ftso", "run"]
