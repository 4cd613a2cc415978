#!/bin/sh
# Run as root by the profiler bento's Dockerfile (bentofile `docker.setup_script`), after the packages are
# installed and before it switches to the `bentoml` user: the folder the service writes profiles to
# (SKILLPROFILER_WORK_DIR), owned by that user, so a volume mounted there starts writable.
set -eu
mkdir -p /srv/profiler/profiles
chown -R bentoml:bentoml /srv/profiler
