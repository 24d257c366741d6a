#!/usr/bin/env python3
"""Runs one build step on attestd with nothing but grpcio and the
published .proto files: the Python counterpart of `attest run`.

    attest_runner.py --src DIR --out PATH [--out PATH...] [--out-dir DIR]
                     [--env K=V...] [--attestation FILE] [--socket PATH] -- CMD ARGS...

1. Hashes DIR into the Merkle tree of attest.v1.Directory messages
   (common.proto says how: sorted names, deterministic encoding).
2. Asks FindMissingBlobs which directories and files the daemon lacks and
   uploads only those with UploadBlobs.
3. Calls Execute and streams its events, copying the step's stdout and
   stderr to ours.
4. Downloads every output with DownloadBlob into --out-dir, checking each
   against the digest the daemon attested and refusing any path that
   would leave --out-dir.
5. Writes the signed DSSE envelope as one line to --attestation (default
   <first output's file name>.intoto.jsonl), for `attest verify` or any
   in-toto tool.

Exits with the step's status (BuildDone.suggested_exit_status) when it
fails, 0 when it succeeded, 2 on a usage error.
"""

import argparse
import hashlib
import os
import stat
import sys
import tempfile

import grpc

import attest_stubs

DEFAULT_SOCKET = "/run/attestd/attestd.sock"
# common.proto / cas.proto: FindMissingBlobs takes at most 100000 digests.
FIND_MISSING_BATCH = 100_000
# cas.proto: uploads go in chunks; 1 MiB keeps every message far below
# the daemon's 16 MiB limit and grpcio's defaults.
CHUNK = 1 << 20


class Tree:
    """A hashed directory: its root digest, every Directory message by
    hash, and every file's path by hash."""

    def __init__(self, stubs):
        self.stubs = stubs
        self.directories = {}  # hash -> (Digest, serialized Directory)
        self.files = {}  # hash -> (Digest, path)
        self.root = None


def name_fields(name: bytes) -> dict:
    """common.proto: a UTF-8 name goes in `name`, any other in `raw_name`."""
    try:
        return {"name": name.decode("utf-8")}
    except UnicodeDecodeError:
        return {"raw_name": name}


def file_digest(stubs, path: str):
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
    return stubs.common.Digest(hash=h.hexdigest(), size_bytes=size)


def hash_directory(tree: Tree, path: bytes):
    """Returns the Digest of the Directory message for `path`, recording
    it and everything under it in `tree`."""
    stubs = tree.stubs
    files, directories, symlinks = [], [], []
    # Bytewise order of the names' bytes (common.proto), which is what
    # sorting bytes in Python gives.
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        st = os.lstat(full)
        if stat.S_ISREG(st.st_mode):
            digest = file_digest(stubs, full)
            tree.files.setdefault(digest.hash, (digest, full))
            files.append(
                stubs.common.FileNode(
                    digest=digest,
                    # Any x bit set: the only mode bit recorded.
                    is_executable=bool(st.st_mode & 0o111),
                    **name_fields(name),
                )
            )
        elif stat.S_ISDIR(st.st_mode):
            digest = hash_directory(tree, full)
            directories.append(stubs.common.DirectoryNode(digest=digest, **name_fields(name)))
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(full)
            try:
                fields = {"target": target.decode("utf-8")}
            except UnicodeDecodeError:
                fields = {"raw_target": target}
            symlinks.append(stubs.common.SymlinkNode(**name_fields(name), **fields))
        else:
            raise SystemExit(f"refusing {os.fsdecode(full)}: not a file, directory or symlink")
    message = stubs.common.Directory(files=files, directories=directories, symlinks=symlinks)
    # The digest is the sha256 of the deterministic encoding.
    data = message.SerializeToString(deterministic=True)
    digest = stubs.common.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    tree.directories.setdefault(digest.hash, (digest, data))
    return digest


def upload_missing(stubs, channel, tree: Tree) -> int:
    """FindMissingBlobs, then UploadBlobs of only what is missing."""
    cas = stubs.cas_grpc.ContentStoreStub(channel)
    all_digests = [d for d, _ in tree.directories.values()] + [d for d, _ in tree.files.values()]
    missing = []
    for start in range(0, len(all_digests), FIND_MISSING_BATCH):
        batch = all_digests[start : start + FIND_MISSING_BATCH]
        reply = cas.FindMissingBlobs(stubs.cas.FindMissingBlobsRequest(digests=batch))
        missing.extend(reply.missing)
    if not missing:
        return 0

    def chunks():
        for digest in missing:
            if digest.hash in tree.directories:
                data = tree.directories[digest.hash][1]
                pieces = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
            else:
                pieces = read_chunks(tree.files[digest.hash][1])
            first = True
            for piece in pieces:
                # cas.proto: the first chunk of each blob carries its digest.
                if first:
                    yield stubs.cas.UploadBlobsRequest(digest=digest, data=piece)
                    first = False
                else:
                    yield stubs.cas.UploadBlobsRequest(data=piece)
            if first:  # an empty file
                yield stubs.cas.UploadBlobsRequest(digest=digest)

    cas.UploadBlobs(chunks())
    return len(missing)


def read_chunks(path: bytes):
    with open(path, "rb") as f:
        while True:
            piece = f.read(CHUNK)
            if not piece:
                return
            yield piece


def safe_destination(out_dir: str, relative: bytes) -> bytes:
    """The path under `out_dir` for an output path, refused if it could
    leave it: absolute, empty, "." or ".." components, or a directory on
    the way that is a symlink."""
    parts = relative.split(b"/")
    if relative.startswith(b"/") or any(p in (b"", b".", b"..") for p in parts):
        raise SystemExit(f"refusing output path {relative!r}: it would leave --out-dir")
    base = os.fsencode(os.path.realpath(out_dir))
    current = base
    for part in parts[:-1]:
        current = os.path.join(current, part)
        if os.path.islink(current):
            raise SystemExit(f"refusing output path {relative!r}: {current!r} is a symlink")
        os.makedirs(current, exist_ok=True)
    destination = os.path.join(current, parts[-1])
    if os.path.islink(destination) or os.path.isdir(destination):
        raise SystemExit(f"refusing output path {relative!r}: something that is not a file is there")
    return destination


def download(stubs, channel, output, out_dir: str) -> bytes:
    relative = output.raw_path if output.raw_path else output.path.encode("utf-8")
    destination = safe_destination(out_dir, relative)
    cas = stubs.cas_grpc.ContentStoreStub(channel)
    h = hashlib.sha256()
    size = 0
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(destination), prefix=b".attest-")
    try:
        with os.fdopen(fd, "wb") as f:
            for reply in cas.DownloadBlob(stubs.cas.DownloadBlobRequest(digest=output.digest)):
                h.update(reply.data)
                size += len(reply.data)
                f.write(reply.data)
        if h.hexdigest() != output.digest.hash or size != output.digest.size_bytes:
            raise SystemExit(f"output {relative!r} does not match its attested digest")
        os.chmod(temporary, 0o755 if output.is_executable else 0o644)
        os.replace(temporary, destination)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return destination


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", default=os.environ.get("ATTEST_SOCKET", DEFAULT_SOCKET))
    parser.add_argument("--src", required=True, help="the input tree; the step runs in it")
    parser.add_argument("--out", action="append", required=True, help="a declared output, relative to --src")
    parser.add_argument("--out-dir", default=".", help="where outputs are written")
    parser.add_argument("--env", action="append", default=[], help="K=V, a variable the step sees")
    parser.add_argument("--attestation", help="default <first output's file name>.intoto.jsonl")
    parser.add_argument("--proto-dir", default=attest_stubs.default_proto_dir())
    parser.add_argument("argv", nargs="+", help="the command, after --")
    args = parser.parse_args()

    stubs = attest_stubs.generate(args.proto_dir)
    env = []
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--env {item!r} is not K=V")
        env.append(stubs.build.EnvVar(name=name, value=value))

    tree = Tree(stubs)
    tree.root = hash_directory(tree, os.fsencode(args.src))
    # A default channel, as any grpcio program would open it.
    channel = grpc.insecure_channel(f"unix:{args.socket}")
    uploaded = upload_missing(stubs, channel, tree)
    print(
        f"attest_runner: input root {tree.root.hash}/{tree.root.size_bytes}, "
        f"{len(tree.files)} distinct files, {uploaded} blobs uploaded",
        file=sys.stderr,
    )

    request = stubs.build.BuildRequest(input_root=tree.root, argv=args.argv, env=env, output_paths=args.out)
    done = None
    for event in stubs.build_grpc.BuildStub(channel).Execute(request):
        kind = event.WhichOneof("event")
        if kind == "log":
            stream = sys.stderr if event.log.stream == stubs.build.LogChunk.STREAM_STDERR else sys.stdout
            stream.buffer.write(event.log.data)
            stream.flush()
        elif kind == "queued":
            print(f"attest_runner: invocation {event.queued.invocation_id}", file=sys.stderr)
        elif kind == "log_cut":
            # The log shown (and stored) is its head and tail only.
            cut = event.log_cut
            name = "stderr" if cut.stream == stubs.build.LogChunk.STREAM_STDERR else "stdout"
            print(
                f"attest_runner: {name} cut to its cap of {cut.cap_bytes} bytes: "
                f"{cut.dropped_bytes} bytes of {cut.step_bytes} dropped",
                file=sys.stderr,
            )
        elif kind == "done":
            done = event.done
    if done is None:
        raise SystemExit("the event stream ended without BuildDone")
    if not done.success:
        print(f"attest_runner: {done.message}", file=sys.stderr)
        return done.suggested_exit_status or 1

    os.makedirs(args.out_dir, exist_ok=True)
    for output in done.outputs:
        destination = download(stubs, channel, output, args.out_dir)
        print(f"attest_runner: wrote {os.fsdecode(destination)}", file=sys.stderr)

    attestation = args.attestation or os.path.basename(args.out[0].rstrip("/")) + ".intoto.jsonl"
    with open(attestation, "wb") as f:
        f.write(done.envelope + b"\n")
    print(f"attest_runner: wrote {attestation}", file=sys.stderr)
    channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
