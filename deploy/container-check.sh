#!/usr/bin/env bash
# Build the Bento, containerize it, run the container and embed through it, then clean up.
#
#   deploy/container-check.sh                      # tiny random-weight CLIP/clip-vit-b-32, offline
#   MODEL=CLIP/clip-vit-b-16 IMPORT_FLAGS= deploy/container-check.sh   # upstream weights (downloads)
#   KEEP_IMAGE=1 deploy/container-check.sh         # keep the image it built
#   CPU_ONLY=1 deploy/container-check.sh           # torch from PyTorch's CPU wheel index
#
# Steps: import MODEL into a BentoML model store and `bentoml build` (the model is recorded in
# the Bento); `bentoml containerize` with docker (when `docker info` works) or podman; start
# the container, wait for GET /health, embed a text and a PNG image through POST /embeddings
# and check both vectors have the same length; print the timings and the image size; remove
# the container and (unless KEEP_IMAGE=1) the image, also on failure.
#
# Variables (all optional):
#   MODEL         model to build and serve (default CLIP/clip-vit-b-32)
#   IMPORT_FLAGS  flags of `python -m models import` (default "--random-weights --tiny": no
#                 download; set it empty for the upstream weights)
#   STORE         temp (default): a fresh BENTOML_HOME in a temporary folder, removed at the end,
#                 so the check neither needs nor changes your store; user: your BENTOML_HOME
#                 (default ~/bentoml), where the model entry and the Bento stay
#   BUILDER       auto (default) | docker | podman
#   CPU_ONLY=1    build with torch/torchvision from https://download.pytorch.org/whl/cpu (a
#                 generated bentofile/requirements variant); needs that index to be reachable
#   HOST_PORT     host port to publish the service's port 8000 on (default: a free port)
#   HEALTH_TIMEOUT seconds to wait for /health (default 300); PULL_TIMEOUT (default 60)
#   KEEP_IMAGE=1  keep the built image; KEEP_BASE=1 keep a locally built base image
#   PYTHON        interpreter with the project's requirements (default .venv/bin/python)
#   NEED_GB       free disk the builder's storage must have (default 20; 8 with CPU_ONLY=1);
#                 FORCE=1 tries anyway
#
# Base image: BentoML's Dockerfile starts FROM python:3.11-slim. Only when that image can be
# neither found locally nor pulled (no registry reachable) does the script build a stand-in
# from Debian packages with debootstrap (root, Debian/Ubuntu host) and say so loudly.
set -Eeuo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

MODEL=${MODEL:-CLIP/clip-vit-b-32}
IMPORT_FLAGS=${IMPORT_FLAGS---random-weights --tiny}
STORE=${STORE:-temp}
BUILDER=${BUILDER:-auto}
CPU_ONLY=${CPU_ONLY:-0}
KEEP_IMAGE=${KEEP_IMAGE:-0}
KEEP_BASE=${KEEP_BASE:-0}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-300}
PULL_TIMEOUT=${PULL_TIMEOUT:-60}
# Committing the ~6 GB virtual-environment layer (PyPI's CUDA torch) needs the working
# container, a temporary layer blob and the stored layer at once: with 9.6 GB free the build
# ran out of space at that commit. A CPU-only venv is about 1 GB.
if [[ $CPU_ONLY == 1 ]]; then NEED_GB=${NEED_GB:-8}; else NEED_GB=${NEED_GB:-20}; fi
FORCE=${FORCE:-0}
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# The port the service listens on in the container: service.py's http={"port":
# settings.server_port}, EMBEDDING_SERVER_PORT, default 8000 (not BentoML's 3000).
CONTAINER_PORT=8000
BASE_IMAGE=docker.io/library/python:3.11-slim
LOCAL_BASE_LABEL=embedding-server.local-base
export BENTOML_DO_NOT_TRACK=true

say() { printf '\n==> %s\n' "$*"; }
die() { printf '\nERROR: %s\n' "$*" >&2; exit 1; }
loud() {
    printf '\n%s\n' '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!'
    printf '!!! %s\n' "$@"
    printf '%s\n\n' '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!'
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/container-check.XXXXXX")
CLI="" CONTAINER="" IMAGE="" BUILT_BASE=0 FAILED=1 DANGLING_BEFORE="" CPU_DIR=""
cleanup() {
    local rc=$?
    set +e
    if [[ -n $CONTAINER ]]; then
        if (( FAILED )); then
            echo "--- last container log lines ---"
            "$CLI" logs --tail 40 "$CONTAINER" 2>&1
        fi
        "$CLI" rm -f "$CONTAINER" >/dev/null 2>&1 && echo "removed container $CONTAINER"
    fi
    if [[ -n $IMAGE ]]; then
        if [[ $KEEP_IMAGE == 1 ]] && ! (( FAILED )); then
            echo "kept image $IMAGE (KEEP_IMAGE=1); run it with:"
            echo "    $CLI run --rm -p $CONTAINER_PORT:$CONTAINER_PORT $IMAGE"
        elif "$CLI" image inspect "$IMAGE" >/dev/null 2>&1; then
            "$CLI" rmi -f "$IMAGE" >/dev/null 2>&1 && echo "removed image $IMAGE"
        fi
    fi
    if [[ -n $CLI ]]; then   # intermediate images this run's build left behind (podman --layers)
        local id
        for id in $("$CLI" images -a -q --filter dangling=true 2>/dev/null | sort -u); do
            grep -qx "$id" <<<"$DANGLING_BEFORE" || "$CLI" rmi "$id" >/dev/null 2>&1
        done
    fi
    if (( BUILT_BASE )) && [[ $KEEP_BASE != 1 ]]; then
        "$CLI" rmi -f "$BASE_IMAGE" localhost/py311-local-base >/dev/null 2>&1 \
            && echo "removed the local stand-in base image $BASE_IMAGE (KEEP_BASE=1 keeps it)"
    fi
    rm -rf "$WORK"
    [[ -z $CPU_DIR ]] || rm -rf "$ROOT/$CPU_DIR"
    if (( rc != 0 )); then echo "container check FAILED (exit $rc)" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the builder ------------------------------------------------------------------------
pick_builder() {
    if [[ $BUILDER == auto || $BUILDER == docker ]] && command -v docker >/dev/null \
        && timeout 20 docker info >/dev/null 2>&1; then
        CLI=docker; return
    fi
    if [[ $BUILDER == auto || $BUILDER == podman ]] && command -v podman >/dev/null \
        && timeout 60 podman info >/dev/null 2>&1; then
        CLI=podman; return
    fi
    die "no usable container builder ($BUILDER). Install one of:
  - Docker Engine with a running daemon (https://docs.docker.com/engine/install/), or
  - Podman: apt-get install -y podman   (dnf install podman, brew install podman + 'podman machine start')
Then run this script again (BUILDER=docker|podman picks one)."
}

check_disk() {
    local root free_kb
    if [[ $CLI == podman ]]; then root=$(podman info --format '{{.Store.GraphRoot}}')
    else root=$(docker info --format '{{.DockerRootDir}}'); fi
    free_kb=$(df -Pk "$root" 2>/dev/null | awk 'NR==2{print $4}') || return 0
    [[ -n $free_kb ]] || return 0
    local free_gb=$(( free_kb / 1024 / 1024 ))
    echo "free disk for $CLI's storage ($root): ${free_gb} GB (need about $NEED_GB GB)"
    if (( free_gb < NEED_GB )); then
        local msg="only ${free_gb} GB free where $CLI stores images ($root); building the image needs about $NEED_GB GB (the CUDA torch venv layer is ~6 GB and is held up to three times while it is committed). Free space, use CPU_ONLY=1, or FORCE=1 to try anyway."
        if [[ $FORCE == 1 ]]; then echo "WARNING: $msg"; else die "$msg"; fi
    fi
}

# --- the base image ---------------------------------------------------------------------
is_local_base() {
    [[ $("$CLI" image inspect --format "{{index .Config.Labels \"$LOCAL_BASE_LABEL\"}}" \
        "$BASE_IMAGE" 2>/dev/null) == debootstrap ]]
}

build_local_base() {
    loud "NO REGISTRY IMAGE OF $BASE_IMAGE COULD BE HAD (not present, pull failed)." \
         "BUILDING A LOCAL STAND-IN FROM DEBIAN PACKAGES WITH debootstrap AND TAGGING IT" \
         "$BASE_IMAGE. It is Debian bookworm's python3.11 with this machine's CA" \
         "certificates, NOT the official image: use it only on this machine."
    [[ $(id -u) == 0 ]] || die "building the local base needs root (debootstrap, chroot)"
    command -v debootstrap >/dev/null || die "install debootstrap (apt-get install -y debootstrap)"
    local t0 mirror rootfs=$WORK/rootfs C=/etc/ssl/certs/ca-certificates.crt
    t0=$(now)
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [[ -n $mirror ]] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    echo "debootstrap bookworm from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$mirror" > "$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed (log above)"; }
    # Outbound HTTPS may go through a re-signing proxy whose CA files are here.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        echo "added this machine's CA certificates: $(cd /usr/local/share/ca-certificates && echo *.crt)"
    fi
    chroot "$rootfs" update-ca-certificates >/dev/null
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "$CLI" import \
        --change 'CMD ["/bin/bash"]' \
        --change "LABEL $LOCAL_BASE_LABEL=debootstrap" \
        --change "ENV SSL_CERT_FILE=$C" --change "ENV PIP_CERT=$C" --change "ENV REQUESTS_CA_BUNDLE=$C" \
        --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - localhost/py311-local-base >/dev/null
    "$CLI" tag localhost/py311-local-base "$BASE_IMAGE"
    rm -rf "$rootfs"
    BUILT_BASE=1
    T_BASE=$(since "$t0")
    echo "local base image built in ${T_BASE}s"
}

ensure_base() {
    if "$CLI" image inspect "$BASE_IMAGE" >/dev/null 2>&1 && ! is_local_base; then
        echo "base image $BASE_IMAGE: present"
        return
    fi
    echo "trying: $CLI pull $BASE_IMAGE (timeout ${PULL_TIMEOUT}s)"
    if timeout "$PULL_TIMEOUT" "$CLI" pull "$BASE_IMAGE" >"$WORK/pull.log" 2>&1; then
        echo "base image $BASE_IMAGE: pulled from the registry"
        return
    fi
    echo "pull failed: $(tail -1 "$WORK/pull.log")"
    if is_local_base; then
        loud "USING THE LOCAL STAND-IN $BASE_IMAGE (Debian bookworm python3.11 built with" \
             "debootstrap by an earlier run), NOT THE OFFICIAL IMAGE: no registry was reachable."
        return
    fi
    build_local_base
}

# --- the Bento ----------------------------------------------------------------------------
write_cpu_variant() {
    # bentofile.yaml and requirements.txt with torch/torchvision from PyTorch's CPU index.
    # BentoML reads requirements files only from inside the build context (no absolute paths,
    # no hidden folders), so the variant lives in deploy/cpu-variant.<pid>/ until the end.
    CPU_DIR=deploy/cpu-variant.$$
    mkdir -p "$CPU_DIR"
    "$PYTHON" - "$CPU_DIR" "$WORK" <<'PY'
import re, sys, yaml
cpu_dir, work = sys.argv[1], sys.argv[2]
lines = open("requirements.txt").read().splitlines()
out = ["--extra-index-url https://download.pytorch.org/whl/cpu"]
for line in lines:
    m = re.match(r"^(torch|torchvision)==([^\s#+]+)", line)
    out.append(f"{m.group(1)}=={m.group(2)}+cpu" if m else line)
open(f"{cpu_dir}/requirements-cpu.txt", "w").write("\n".join(out) + "\n")
cfg = yaml.safe_load(open("bentofile.yaml"))
cfg.setdefault("python", {})["requirements_txt"] = f"./{cpu_dir}/requirements-cpu.txt"
# uv (BentoML's installer) takes a package from the first index that has it; let it pick the
# best match across PyPI and the CPU index (the +cpu pins exist only on the latter).
envs = cfg.setdefault("envs", [])
envs.append({"name": "UV_INDEX_STRATEGY", "value": "unsafe-best-match"})
yaml.safe_dump(cfg, open(f"{work}/bentofile-cpu.yaml", "w"), sort_keys=False)
PY
    echo "CPU_ONLY=1: $WORK/bentofile-cpu.yaml, $CPU_DIR/requirements-cpu.txt with torch/torchvision +cpu from https://download.pytorch.org/whl/cpu"
}

build_bento() {
    if [[ $STORE == temp ]]; then
        export BENTOML_HOME=$WORK/bentoml
        echo "BENTOML_HOME=$BENTOML_HOME (temporary, removed at the end; STORE=user uses yours)"
    else
        echo "BENTOML_HOME=${BENTOML_HOME:-$HOME/bentoml} (yours: the model entry and the Bento stay)"
    fi
    # shellcheck disable=SC2086
    "$PYTHON" -m models import "$MODEL" $IMPORT_FLAGS --if-missing
    local args=(--arg "model=$MODEL")   # the Bento records its model (bentoml.use_arguments)
    if [[ $CPU_ONLY == 1 ]]; then
        write_cpu_variant
        args+=(-f "$WORK/bentofile-cpu.yaml")
    fi
    local t0; t0=$(now)
    "$PYTHON" -m bentoml build "${args[@]}" -o tag "$ROOT" > "$WORK/build.log" 2>&1 \
        || { tail -30 "$WORK/build.log"; die "bentoml build failed"; }
    T_BUILD=$(since "$t0")
    BENTO=$(sed -n 's/^__tag__://p' "$WORK/build.log" | tail -1)
    [[ -n $BENTO ]] || { cat "$WORK/build.log"; die "no Bento tag in the build output"; }
    echo "built Bento $BENTO in ${T_BUILD}s (bentoml build ${args[*]})"
}

containerize() {
    local t0; t0=$(now)
    local rc
    set +e
    "$PYTHON" -m bentoml containerize "$BENTO" --backend "$CLI" -t "$IMAGE" 2>&1 \
        | tee "$WORK/containerize.log" | grep --line-buffered -E 'STEP [0-9]+/[0-9]+|Step [0-9]+/[0-9]+|#[0-9]+ \[|To run|(docker|podman) run'
    rc=${PIPESTATUS[0]}
    set -e
    (( rc == 0 )) || { tail -40 "$WORK/containerize.log"; die "bentoml containerize failed"; }
    T_IMAGE=$(since "$t0")
    "$CLI" image inspect "$IMAGE" >/dev/null 2>&1 || { tail -40 "$WORK/containerize.log"; die "no image $IMAGE"; }
    SIZE=$("$CLI" image inspect --format '{{.Size}}' "$IMAGE")
    echo "image $IMAGE built in ${T_IMAGE}s, $(awk -v s="$SIZE" 'BEGIN{printf "%.2f GB", s/1e9}') ($SIZE bytes)"
    echo "(BentoML's hint 'run -p 3000:3000' is wrong for this service, which listens on $CONTAINER_PORT: use -p $CONTAINER_PORT:$CONTAINER_PORT)"
}

# --- run and embed --------------------------------------------------------------------------
free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

run_container() {
    HOST_PORT=${HOST_PORT:-$(free_port)}
    CONTAINER=embedding-server-check-$$
    # No EMBEDDING_MODEL_NAME: the Bento serves the model it was built with (--arg model=).
    RUN_CMD=("$CLI" run -d --name "$CONTAINER" -p "127.0.0.1:$HOST_PORT:$CONTAINER_PORT" "$IMAGE")
    echo "${RUN_CMD[*]}"
    local t0; t0=$(now)
    "${RUN_CMD[@]}" >/dev/null
    local url=http://127.0.0.1:$HOST_PORT/health deadline=$(( $(date +%s) + HEALTH_TIMEOUT ))
    until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url" || true) == 200 ]]; do
        [[ $("$CLI" inspect --format '{{.State.Running}}' "$CONTAINER" 2>/dev/null) == true ]] \
            || die "the container stopped before /health answered 200"
        (( $(date +%s) < deadline )) || die "/health did not answer 200 within ${HEALTH_TIMEOUT}s"
        sleep 1
    done
    T_HEALTHY=$(since "$t0")
    echo "healthy after ${T_HEALTHY}s: $(curl -s --max-time 5 "$url")"
}

embed() {
    "$PYTHON" - "http://127.0.0.1:$HOST_PORT" "$MODEL" <<'PY'
import base64, json, struct, sys, time, urllib.request, zlib

base, model = sys.argv[1], sys.argv[2]

def png(w=64, h=48):
    rows = b"".join(b"\x00" + bytes(v for x in range(w) for v in (4 * x % 256, 5 * y % 256, 128))
                    for y in range(h))
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))

def embed(item):
    body = json.dumps({"model": model, "input": item, "encoding_format": "float"}).encode()
    req = urllib.request.Request(base + "/embeddings", body, {"content-type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as resp:
        vector = json.load(resp)["embedding"]
    return vector, time.perf_counter() - t0

text, t_text = embed({"type": "text", "text": "A photo of a cat"})
image, t_image = embed({"type": "image_base64", "image_base64": base64.b64encode(png()).decode()})
print(f"text  vector: {len(text)} floats ({1000 * t_text:.0f} ms)")
print(f"image vector: {len(image)} floats ({1000 * t_image:.0f} ms)")
if not text or len(text) != len(image) or not all(isinstance(v, float) for v in text + image):
    sys.exit(f"vector lengths disagree or are not floats: {len(text)} vs {len(image)}")
current = json.load(urllib.request.urlopen(base + "/model/current", timeout=10))
print("model/current:", json.dumps(current))
if current["model"] != model:
    sys.exit(f"the container serves {current['model']}, not {model}, the model its Bento was built for")
PY
}

# --- main ------------------------------------------------------------------------------------
T0=$(now)
T_BASE=none
pick_builder
say "builder: $CLI ($("$CLI" --version))"
DANGLING_BEFORE=$("$CLI" images -a -q --filter dangling=true 2>/dev/null | sort -u || true)
check_disk
say "base image"
ensure_base
say "bentoml build (MODEL=$MODEL, import flags: ${IMPORT_FLAGS:-none}, CPU_ONLY=$CPU_ONLY)"
build_bento
IMAGE=embedding-server-check:${BENTO##*:}
say "bentoml containerize $BENTO --backend $CLI -t $IMAGE"
containerize
say "start the container"
run_container
say "POST /embeddings: a text and an image"
embed
FAILED=0
say "container check PASSED"
cat <<EOF
  model            $MODEL (${IMPORT_FLAGS:-upstream weights})
  bento            $BENTO
  image            $IMAGE, $(awk -v s="$SIZE" 'BEGIN{printf "%.2f GB", s/1e9}') ($SIZE bytes)
  local base build ${T_BASE}$([[ $T_BASE == none ]] || echo s)
  bento build      ${T_BUILD}s
  image build      ${T_IMAGE}s
  start->healthy   ${T_HEALTHY}s
  total            $(since "$T0")s
EOF
