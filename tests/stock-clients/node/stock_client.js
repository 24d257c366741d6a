// A stock @grpc/grpc-js client with default options, against attestd's
// Unix socket: health checks, the Keys service, and one whole build
// (hash a tree, FindMissingBlobs, UploadBlobs, Execute with its event
// stream, DownloadBlob), with services loaded from proto/attest/v1/*.proto
// at run time by @grpc/proto-loader.
//
// Driven by tests/tests/stock_clients.rs, which checks what it prints:
//
//     node stock_client.js SOCKET PROTO_DIR WORK_DIR
//
// WORK_DIR/src is the input tree (UTF-8 names only: enough for a test).
// The step is `sh -c 'tr a-z A-Z < in.txt > up.txt; echo ...'`; up.txt is
// downloaded to WORK_DIR/out/up.txt, the envelope written to
// WORK_DIR/node.intoto.jsonl and the keys' PEM to WORK_DIR/node.pub.pem.
// Prints one JSON object: {health, keys, stdout, stderr, outputs}.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const [socket, protoDir, workDir] = process.argv.slice(2);

const definition = protoLoader.loadSync(
  ['attest/v1/build.proto', 'attest/v1/cas.proto', 'attest/v1/keys.proto', 'health.proto'],
  { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [protoDir, __dirname] },
);
const loaded = grpc.loadPackageDefinition(definition);
// The Directory message is hashed as bytes, so it is encoded with
// protobufjs itself (the library proto-loader builds on).
const root = new protobuf.Root();
root.loadSync(path.join(protoDir, 'attest/v1/common.proto'), { keepCase: true });
const Directory = root.lookupType('attest.v1.Directory');

// Default options: no channel arguments at all.
const target = `unix:${socket}`;
const credentials = grpc.credentials.createInsecure();
const health = new loaded.grpc.health.v1.Health(target, credentials);
const keys = new loaded.attest.v1.Keys(target, credentials);
const cas = new loaded.attest.v1.ContentStore(target, credentials);
const build = new loaded.attest.v1.Build(target, credentials);

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, (error, reply) => (error ? reject(error) : resolve(reply)));
  });
}

function sha256(bytes) {
  return crypto.createHash('sha256').update(bytes).digest('hex');
}

// common.proto: lists sorted bytewise by name; a field at its default
// value is not encoded (proto3), so it is left out of the object.
function byName(a, b) {
  return Buffer.compare(Buffer.from(a.name), Buffer.from(b.name));
}

function digestOf(bytes) {
  const digest = { hash: sha256(bytes) };
  if (bytes.length > 0) digest.size_bytes = bytes.length;
  return digest;
}

function hashDirectory(dir, blobs) {
  const files = [];
  const directories = [];
  const symlinks = [];
  for (const name of fs.readdirSync(dir)) {
    const full = path.join(dir, name);
    const stat = fs.lstatSync(full);
    if (stat.isFile()) {
      const bytes = fs.readFileSync(full);
      const digest = digestOf(bytes);
      blobs.set(digest.hash, { digest, bytes });
      const node = { name, digest };
      if (stat.mode & 0o111) node.is_executable = true;
      files.push(node);
    } else if (stat.isDirectory()) {
      directories.push({ name, digest: hashDirectory(full, blobs) });
    } else if (stat.isSymbolicLink()) {
      symlinks.push({ name, target: fs.readlinkSync(full) });
    } else {
      throw new Error(`refusing ${full}: not a file, directory or symlink`);
    }
  }
  const message = {};
  if (files.length) message.files = files.sort(byName);
  if (directories.length) message.directories = directories.sort(byName);
  if (symlinks.length) message.symlinks = symlinks.sort(byName);
  const bytes = Buffer.from(Directory.encode(Directory.fromObject(message)).finish());
  const digest = digestOf(bytes);
  blobs.set(digest.hash, { digest, bytes });
  return digest;
}

function upload(blobs) {
  return new Promise((resolve, reject) => {
    const call = cas.UploadBlobs((error, reply) => (error ? reject(error) : resolve(reply)));
    for (const { digest, bytes } of blobs) {
      call.write({ digest, data: bytes });
    }
    call.end();
  });
}

function execute(request) {
  return new Promise((resolve, reject) => {
    const result = { stdout: '', stderr: '', done: null };
    const call = build.Execute(request);
    call.on('data', (event) => {
      if (event.event === 'log') {
        const text = Buffer.from(event.log.data).toString();
        if (event.log.stream === 'STREAM_STDERR') result.stderr += text;
        else result.stdout += text;
      } else if (event.event === 'done') {
        result.done = event.done;
      }
    });
    call.on('error', reject);
    call.on('end', () => resolve(result));
  });
}

function download(digest) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const call = cas.DownloadBlob({ digest });
    call.on('data', (reply) => chunks.push(Buffer.from(reply.data)));
    call.on('error', reject);
    call.on('end', () => resolve(Buffer.concat(chunks)));
  });
}

async function main() {
  const statuses = {};
  for (const service of ['', 'attest.v1.Build', 'attest.v1.Keys']) {
    statuses[service] = (await unary(health, 'Check', { service })).status;
  }
  const keyReply = await unary(keys, 'GetPublicKeys', {});
  fs.writeFileSync(path.join(workDir, 'node.pub.pem'), keyReply.keys.map((k) => k.pem).join(''));

  const blobs = new Map();
  const inputRoot = hashDirectory(path.join(workDir, 'src'), blobs);
  const missing = (await unary(cas, 'FindMissingBlobs', { digests: [...blobs.values()].map((b) => b.digest) }))
    .missing;
  await upload(missing.map((d) => blobs.get(d.hash)));

  const run = await execute({
    input_root: inputRoot,
    argv: ['sh', '-c', 'tr a-z A-Z < in.txt > up.txt && echo node-stdout && echo node-stderr >&2'],
    output_paths: ['up.txt'],
  });
  if (!run.done || !run.done.success) {
    throw new Error(`build failed: ${run.done ? run.done.message : 'no BuildDone'}`);
  }
  const outputs = [];
  fs.mkdirSync(path.join(workDir, 'out'), { recursive: true });
  for (const output of run.done.outputs) {
    const bytes = await download(output.digest);
    if (sha256(bytes) !== output.digest.hash) throw new Error(`${output.path} does not match its digest`);
    // The daemon's paths are checked before use (no "..", not absolute).
    if (path.isAbsolute(output.path) || output.path.split('/').some((p) => ['', '.', '..'].includes(p))) {
      throw new Error(`refusing output path ${output.path}`);
    }
    fs.writeFileSync(path.join(workDir, 'out', output.path), bytes);
    outputs.push(output.path);
  }
  fs.writeFileSync(path.join(workDir, 'node.intoto.jsonl'), Buffer.concat([Buffer.from(run.done.envelope), Buffer.from('\n')]));
  console.log(
    JSON.stringify({
      health: statuses,
      keys: keyReply.keys.map((k) => k.keyid),
      input_root: inputRoot.hash,
      missing: missing.length,
      stdout: run.stdout,
      stderr: run.stderr,
      outputs,
    }),
  );
  for (const client of [health, keys, cas, build]) client.close();
}

main().catch((error) => {
  console.error(`stock_client.js: ${error.stack || error}`);
  process.exit(1);
});
